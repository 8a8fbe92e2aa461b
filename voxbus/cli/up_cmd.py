"""`voxbus up`: server, manager, STT, TTS and assistant in one process, until Ctrl-C."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("up", parents=[common], help="run every service together (long-running)",
                       description="Start the embedded server (unless --nats or one is running), the "
                                   "ModelManager, the STT and TTS services and the assistant. Ctrl-C drains.")
    p.add_argument("--preload", action="store_true", help="load the default models at start")
    p.add_argument("--http", action="store_true",
                   help="also serve the OpenAI-compatible API (http.host:http.port, 127.0.0.1:8000)")
    p.add_argument("--wyoming", action="store_true", help="also serve Wyoming for Home Assistant (wyoming.uri)")
    p.add_argument("--auth", action="store_true",
                   help="embedded server with authentication on; each service runs with its own role, and "
                        "a client credential is written for you")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.assistant import Assistant
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.manager import ModelManager
    from voxbus.stt import SttService
    from voxbus.tts import TtsService

    config = load_for(args)
    if args.auth:
        return run_async(lambda: up_with_auth(config, args.preload, args))

    async def up() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-up") as bus:
            async with ModelManager(bus) as manager:
                if args.preload:
                    for model_id in config.manager.defaults.values():
                        await manager.pool.load(manager.pool.find(model_id))
                async with SttService(bus), TtsService(bus), Assistant(bus), gateways(bus, args) as extra:
                    print(f"voxbus up on {bus.url}: manager {manager.id}, stt, tts, assistant{extra}; Ctrl-C to stop",
                          flush=True)
                    await stop.wait()
                    print("draining...", flush=True)
        return 0

    return run_async(up)


SERVICE_ROLES = ("manager", "stt", "tts", "assistant")


def gateways(bus, args):
    """The gateways asked for (--http, --wyoming), on `bus`; yields what to add to the banner."""
    import contextlib

    @contextlib.asynccontextmanager
    async def serving():
        from voxbus.gateways import http_app, wyoming_gateway

        said = ""
        async with contextlib.AsyncExitStack() as stack:
            if args.http:
                url = await stack.enter_async_context(http_app.serving(bus, bus.config.http.host, bus.config.http.port))
                said += f", OpenAI API at {url}/v1 (dashboard at {url}/)"
            if args.wyoming:
                uri = await stack.enter_async_context(wyoming_gateway.serving(bus, bus.config.wyoming.uri,
                                                                              bus.config.wyoming.zeroconf))
                said += f", Wyoming at {uri}"
            yield said
    return serving()


async def up_with_auth(config, preload: bool, args) -> int:
    """The embedded server with auth on, and each service on a connection of its own role."""
    import contextlib

    import msgspec

    from voxbus.assistant import Assistant
    from voxbus.auth.users import UserRegistry
    from voxbus.bus import open_bus
    from voxbus.cli import stop_on_signals
    from voxbus.cli.server_cmd import prepare_streams
    from voxbus.errors import ConfigError
    from voxbus.manager import ModelManager
    from voxbus.server import NatsServer
    from voxbus.stt import SttService
    from voxbus.subjects import Subjects
    from voxbus.tenancy import TenantServices
    from voxbus.tts import TtsService

    if config.nats.url:
        raise ConfigError("--auth starts the embedded server with authentication; it does not go with --nats")
    stop = stop_on_signals()
    emb = msgspec.structs.replace(config.nats.embedded, auth=True)
    async with NatsServer(emb, prefix=config.nats.prefix) as server:
        await prepare_streams(server, config)
        registry = UserRegistry(server.auth_dir, Subjects(config.nats.prefix))
        creds = {role: registry.role_seed(f"up-{role}", role) for role in (*SERVICE_ROLES, "client")}
        server.reload()

        def as_role(role: str):
            return msgspec.structs.replace(config, nats=msgspec.structs.replace(
                config.nats, url=server.url, creds=str(creds[role]),
                tls_ca=str(server.tls_ca) if server.tls_ca else config.nats.tls_ca))
        async with contextlib.AsyncExitStack() as stack:
            buses = {role: await stack.enter_async_context(_open_when_known(open_bus, as_role(role), role))
                     for role in SERVICE_ROLES}
            manager = await stack.enter_async_context(ModelManager(buses["manager"]))
            if preload:
                for model_id in config.manager.defaults.values():
                    await manager.pool.load(manager.pool.find(model_id))
            for service in (SttService(buses["stt"]), TtsService(buses["tts"]), Assistant(buses["assistant"])):
                await stack.enter_async_context(service)
            for role, factory in (("stt", SttService), ("tts", TtsService), ("assistant", Assistant)):
                await stack.enter_async_context(TenantServices(buses[role], [factory]))  # (every tenant's)
            if args.http or args.wyoming:  # the gateways are clients: a client's credential
                client_bus = await stack.enter_async_context(_open_when_known(open_bus, as_role("client"), "client"))
                extra = await stack.enter_async_context(gateways(client_bus, args))
                print(f"gateways{extra}", flush=True)
            print(f"voxbus up on {server.url} with authentication: manager {manager.id}, stt, tts, assistant, "
                  f"each with its own role; Ctrl-C to stop", flush=True)
            print(f"clients connect with: --nats {server.url} --creds {creds['client']}  "
                  f"(more: voxbus creds new --role client -o FILE --store-dir {server.store_dir})", flush=True)
            await stop.wait()
            print("draining...", flush=True)
    return 0


def _open_when_known(open_bus, config, role: str):
    """open_bus, retried for a moment: the server reads new credentials asynchronously (SIGHUP)."""
    import asyncio
    import contextlib

    from voxbus.errors import ServerError

    @contextlib.asynccontextmanager
    async def opened():
        for attempt in range(50):
            try:
                cm = open_bus(config, name=f"voxbus-up-{role}", embed=False)
                bus = await cm.__aenter__()
                break
            except ServerError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        try:
            yield bus
        finally:
            await cm.__aexit__(None, None, None)
    return opened()
