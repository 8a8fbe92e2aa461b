"""Starting a reply before the turn has ended (`assistant.speculate`).

When the STT's early final comes as a `closing` partial (the speaker paused; it is what the final
will say if the pause ends the turn), the assistant starts generating the reply to it at once.
Everything generated is held back, except that its first piece goes to the TTS as a held say
request: synthesized there, published to nobody. If the final then says the same, the reply
adopts the generation (held tokens first) and releases the held audio, which goes out at once;
if not (the speaker went on), the generation is cancelled (the manager stops it; the
conversation's KV cache keeps only the common prefix), the held audio is discarded, and the
final is answered as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from voxbus.messages.model import GenerateChunk
from voxbus.sentences import SentenceSplitter



class Speculation:
    """One held-back reply to a closing partial: ``async for event in spec.events(): ...`` once adopted."""

    def __init__(self, utterance: int, text: str, turn: int, generate: AsyncIterator,
                 splitter: SentenceSplitter, say_held: Callable[[str], Awaitable[None]]) -> None:
        self.utterance = utterance
        self.text = text
        self.turn = turn  # the conversation's next turn: the one the final will be
        self.pieces_said = 0  # pieces of the reply sent to the TTS as held (0 or 1)
        self.saying = asyncio.Lock()  # held while that piece is being stored: a release waits for it
        self.adopted = False
        self._failed = False
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(generate, splitter, say_held), name="assistant-speculation")

    async def _run(self, generate: AsyncIterator, splitter: SentenceSplitter,
                   say_held: Callable[[str], Awaitable[None]]) -> None:
        try:
            async for event in generate:
                self._queue.put_nowait(event)
                if isinstance(event, GenerateChunk) and not self.pieces_said and not self.adopted:
                    pieces = splitter.feed(event.text)
                    if pieces:
                        async with self.saying:
                            if not self.adopted:  # (once adopted, the reply says every piece itself)
                                self.pieces_said = 1
                                await say_held(pieces[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised again to whoever adopts it anyway
            self._failed = True
            self._queue.put_nowait(exc)
        finally:
            self._queue.put_nowait(None)
            await generate.aclose()  # (tells the manager to stop, when cancelled half-way)

    def matches(self, utterance: int | None, text: str) -> bool:
        """The final says exactly this (the early final is the same decode of the same audio), and
        the generation has not failed or been stopped (then the turn generates anew)."""
        task = self._task
        broken = task.cancelled() or (task.done() and task.exception() is not None) or self._failed
        return utterance == self.utterance and text.strip() == self.text.strip() and not broken

    async def adopt(self) -> int:
        """The final said the same: from now on the reply is said by its adopter. Returns how many
        pieces were already sent held (to be released, and skipped by the adopter)."""
        async with self.saying:  # (a held piece being stored goes first: the release must follow it)
            self.adopted = True
            return self.pieces_said

    async def events(self) -> AsyncIterator:
        while (event := await self._queue.get()) is not None:
            if isinstance(event, Exception):
                raise event
            yield event

    def cancel(self) -> None:
        self._task.cancel()
