"""CLI commands that talk to a model: serve (OpenAI-compatible HTTP) and chat (terminal)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from thermocline.errors import ThermoclineError
from thermocline.runtime.commands import DtypeOpt, ModelArg, ModelOpt, pick_model


def serve(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(help="Model id clients ask for (repeatable); default: the MODEL argument."),
    ] = None,
    max_prompt_tokens: Annotated[
        int | None,
        typer.Option(help="Longest prompt accepted (default: the model's context).", min=1),
    ] = None,
    max_tokens_limit: Annotated[
        int, typer.Option(help="Most tokens one request may generate.", min=1)
    ] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.", min=1)] = 1
    << 20,
    dtype: DtypeOpt = "fp32",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    import uvicorn

    from thermocline.runtime.engine import load_model
    from thermocline.runtime.server import ServerConfig, create_app

    config = ServerConfig(
        tuple(served_model_name or ()), max_prompt_tokens, max_tokens_limit, max_body_bytes
    )
    loaded = load_model(pick_model(model, model_opt), dtype)
    # uvicorn configures only its own loggers; ours writes the one line per request.
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    typer.secho(
        f"serving {loaded.name} ({loaded.mode}) on http://{host}:{port}/v1", err=True, dim=True
    )
    uvicorn.run(
        create_app(loaded, config), host=host, port=port, log_level=log_level, access_log=False
    )


def chat(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    system: Annotated[
        str | None, typer.Option(help="System message that opens the conversation.")
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("-n", "--max-new-tokens", help="Tokens per reply at most.")
    ] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.7,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1: off).")] = 0.9,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    dtype: DtypeOpt = "fp32",
) -> None:
    """Chat with a model in the terminal, replies streamed, using the model's chat template."""
    from thermocline.runtime.chat import ChatSession, run_chat
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.generate import SamplingParams

    params = SamplingParams(max_new_tokens, temperature, top_k, top_p, seed)
    loaded = load_model(pick_model(model, model_opt), dtype)
    if not loaded.tokenizer.chat_template:
        raise ThermoclineError(
            f"{loaded.name} has no chat template; use `thermocline generate` instead"
        )
    run_chat(ChatSession(loaded, params, system))


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(chat)
