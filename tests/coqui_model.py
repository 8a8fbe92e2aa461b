"""A tiny random-weight Coqui VITS model for tests and benchmarks.

Nothing may be fetched from a model hub, so tests build their own model. Random weights exercise
exactly the load/synthesize path of a trained VITS; only the sound is noise. Sizes are cut down
so building and synthesizing take well under a second on a laptop CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_RATE = 16000


def build_random_vits(out_dir: Path, seed: int = 0, speakers: list[str] | None = None) -> tuple[Path, Path]:
    """Write `model.pth` and `config.json` for a small random VITS into out_dir; return both paths.

    With `speakers`, the model is multi-speaker (a speaker embedding plus `speakers.json`).
    """
    import torch
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    speaker_kw: dict = {}
    if speakers:
        speakers_file = out_dir / "speakers.json"
        speakers_file.write_text(json.dumps({name: i for i, name in enumerate(speakers)}))
        speaker_kw = {"use_speaker_embedding": True, "speakers_file": str(speakers_file)}

    torch.manual_seed(seed)  # reproducible weights, hence reproducible durations
    args = VitsArgs(
        hidden_channels=32,
        hidden_channels_ffn_text_encoder=64,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        use_sdp=False,  # the plain duration predictor is smaller and deterministic
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_initial_channel_decoder=32,  # upsample rates keep the default product 256 = hop_length
        init_discriminator=False,  # training-only; would multiply the file size
        speaker_embedding_channels=16,
        **speaker_kw,
    )
    config = VitsConfig(
        model_args=args,
        use_phonemes=False,  # graphemes: no espeak / phonemizer needed
        text_cleaner="basic_cleaners",  # lowercases, so "Hello" maps onto the default character set
        phoneme_language="en",  # names the text language; without it Coqui warns and assumes English
        test_sentences=[],
        **speaker_kw,  # the config repeats these for the speaker manager
    )
    config.audio.sample_rate = SAMPLE_RATE
    model = Vits(config)  # characters stay None: loading rebuilds the same default vocabulary

    model_path, config_path = out_dir / "model.pth", out_dir / "config.json"
    torch.save({"model": model.state_dict()}, model_path)
    config.save_json(str(config_path))
    return model_path, config_path
