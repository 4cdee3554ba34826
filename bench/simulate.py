"""Benchmark: dialogue simulation: planning at scale, the client's own cost per call, and SmolLM2 in process.

1. Planning (partners and turn plans, no LLM) for 4,000 and 100,000 roles:
   wall and CPU seconds. Target: under 30 s for 100,000.
2. Client-side overhead per call: the whole simulation of 4,000 roles x 5
   turns (the paper's scale) through HttpBackend with 64 requests in flight,
   against a loopback OpenAI-compatible peer in another process that answers
   at once (tests/loopback_llm.py). Per call: the client process's CPU time
   and wall time, and its resident memory at a quarter and at the full
   scale. Target: under 2 ms per call, with flat memory.
3. End-to-end turns per minute with batching on (the backend hands the engine
   up to --batch requests at a time) against off (one request at a time), on
   the same characters, settings and seed, each with a fresh call cache.
4. The HTTP path's cost per call: the same requests through HttpBackend and
   `ditto-jax serve`'s server (in this process, over the same engine, one
   request in flight) against the bare engine.generate, one request at a time.

Both modes run once untimed first, so XLA compiles happen outside the timings.

    python bench/simulate.py [--quick] [--characters characters.parquet] [--limit 8] [--turns 2] [--skip-model]

Without --characters it uses the built-in sample (English and Chinese).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


REPO = Path(__file__).resolve().parents[1]


def synthetic_roles(n: int):
    """n roles in two languages with random categories, eras and domains (the planning's features)."""
    from data_tools.simulation.roles import Role

    rng = random.Random(0)
    return [
        Role(i, f"Q{i}", "en" if i % 2 else "zh", rng.choice(["human", "fictional"]), f"Character {i}", "a person", "", (),
             rng.choice([None, rng.randrange(-500, 2000)]), frozenset({rng.choice(["war", "art", "science", "myth"])}))
        for i in range(n)
    ]


def planning_seconds(n: int) -> tuple[float, float, float]:
    """(wall s, CPU s, paired share) to plan partners and sessions for n roles whose every query parsed."""
    from data_tools.simulation.partners import plan_partners
    from data_tools.simulation.pipeline import SimulationConfig, SimulationReport, plan_sessions
    from data_tools.simulation.queries import Question

    roles = synthetic_roles(n)
    config = SimulationConfig()
    calls = config.query_calls_per_role
    asked = {(r.index, j): [Question(f"{r.character_id} q{j}.{i}?", (), r.character_id) for i in range(config.questions_per_pair)]
             for r in roles for j in range(calls)}
    wall, cpu = time.perf_counter(), time.process_time()
    partners = plan_partners(roles, calls, config.seed)
    plans = plan_sessions(roles, partners, asked, config, SimulationReport())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pairings = [p for plan in plans if plan for p in plan.pairings if p]
    return wall, cpu, pairings.count("paired") / max(1, len(pairings))


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def client_overhead(n_roles: int, turns: int, in_flight: int, workdir: Path) -> dict[str, float]:
    """Simulate n_roles roles against the loopback peer (another process); the client's cost per call."""
    from data_tools.llm.cache import CallCache
    from data_tools.llm.http_backend import HttpBackend
    from data_tools.llm.runner import CallRunner
    from data_tools.simulation.pipeline import SimulationConfig, simulate
    from data_tools.simulation.prompts import PromptTemplates
    from data_tools.simulation.roles import Role

    peer = subprocess.Popen([sys.executable, str(REPO / "tests" / "loopback_llm.py")], stdout=subprocess.PIPE, text=True)
    try:
        url = peer.stdout.readline().strip()
        base = synthetic_roles(n_roles)
        profile = "This character lived a long life and is remembered for it. Many stories are told about this character."
        out = {}
        for label, n in (("quarter", n_roles // 4), ("full", n_roles)):
            roles = [Role(r.index, r.character_id, r.lang, r.category, r.label, r.description, profile, (), r.era, r.domain) for r in base[:n]]
            backend = HttpBackend([url], "loopback", concurrency=in_flight)
            with CallCache(Path(tempfile.mkdtemp(dir=workdir)) / "calls.sqlite") as cache:
                runner = CallRunner(backend, cache)
                wall, cpu = time.perf_counter(), time.process_time()
                frame, report = simulate(roles, runner, PromptTemplates(), SimulationConfig(turns=turns), partner_pool=roles)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                calls = runner.stats.calls
            backend.close()
            out[f"{label}_calls"] = calls
            out[f"{label}_cpu_ms"] = cpu / calls * 1000
            out[f"{label}_wall_ms"] = wall / calls * 1000
            out[f"{label}_rss_mib"] = _rss_mib()
            out[f"{label}_sessions"] = report.sessions
            out[f"{label}_output_mib"] = frame.estimated_size() / 2**20  # the table itself, which must grow
        return out
    finally:
        peer.terminate()
        peer.wait()


def simulate_once(engine, roles, everyone, batch: int, config, workdir: Path) -> tuple[float, int]:
    """Seconds and turns for one full simulation with a fresh cache."""
    from data_tools.llm.cache import CallCache
    from data_tools.llm.jax_backend import JaxBackend
    from data_tools.llm.runner import CallRunner
    from data_tools.simulation.pipeline import simulate
    from data_tools.simulation.prompts import PromptTemplates

    backend = JaxBackend(engine, "smollm2", max_batch=batch)
    cache_path = Path(tempfile.mkdtemp(dir=workdir)) / "calls.sqlite"
    with CallCache(cache_path) as cache:
        runner = CallRunner(backend, cache)
        start = time.perf_counter()
        _, report = simulate(roles, runner, PromptTemplates(), config, partner_pool=everyone)
        return time.perf_counter() - start, report.turns


def http_overhead(model, engine, bundle, calls: int, max_tokens: int) -> tuple[float, float]:
    """Median seconds per call through HTTP (client + server) and on the bare engine, same requests."""
    from data_tools.llm.http_backend import HttpBackend
    from data_tools.llm.types import ChatRequest
    from ditto_jax.generation import Engine, GenerationRequest
    from ditto_jax.serving.app import ServedModel, create_app
    from ditto_jax.serving.server import BackgroundServer
    from ditto_jax.serving.worker import EngineWorker

    # The server drives its own engine on its worker thread (same weights); the bare path calls `engine` directly.
    worker = EngineWorker(Engine(model, bundle, max_batch=16), batch_wait_s=0.01, name="bench-serve")
    app = create_app([ServedModel("smollm2", worker, default_max_tokens=max_tokens)])
    with BackgroundServer(app) as base_url:
        url = f"{base_url}/v1"
        client = HttpBackend([url], "smollm2", concurrency=1)
        messages = [{"role": "user", "content": "Who are you? Answer in one sentence."}]
        chat = [ChatRequest.chat(messages, max_tokens=max_tokens, temperature=0.0, seed=i) for i in range(calls)]
        bare = [GenerationRequest(messages, max_new_tokens=max_tokens, temperature=0.0, seed=i) for i in range(calls)]

        def one_http(request) -> float:
            start = time.perf_counter()
            [(_, result)] = list(client.complete([request]))
            assert not isinstance(result, Exception), result
            return time.perf_counter() - start

        def one_bare(request) -> float:
            start = time.perf_counter()
            engine.generate([request])
            return time.perf_counter() - start

        one_http(chat[0]), one_bare(bare[0])  # warm-up: compiles and the connection
        # Interleaved pairs of the same request, so drifting machine load hits both paths alike; medians.
        pairs = [(one_http(c), one_bare(b)) for c, b in zip(chat, bare)]
        http_s = statistics.median(h for h, _ in pairs)
        bare_s = statistics.median(b for _, b in pairs)
        client.close()
    worker.close()
    return http_s, bare_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--characters", type=Path, help="characters.parquet (default: the built-in sample)")
    parser.add_argument("--limit", type=int, default=4, help="character rows to simulate per language (default 4)")
    parser.add_argument("--turns", type=int, default=4, help="as in the shipped build config (default 4)")
    parser.add_argument("--questions-per-pair", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="requests per engine call with batching on (default 8)")
    parser.add_argument("--max-answer-tokens", type=int, default=128, help="as in the shipped build config (default 128)")
    parser.add_argument("--max-query-tokens", type=int, default=256, help="as in the shipped build config (default 256)")
    parser.add_argument("--http-calls", type=int, default=32)
    parser.add_argument("--http-tokens", type=int, default=2, help="new tokens per call in the HTTP comparison (default 2)")
    parser.add_argument("--skip-batching", action="store_true", help="only measure the HTTP overhead")
    parser.add_argument("--skip-model", action="store_true", help="only planning and the client's overhead (no SmolLM2)")
    parser.add_argument("--roles", type=int, default=4000, help="roles for the client-overhead run (default 4000, the paper's scale)")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight for the client-overhead run (default 64)")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere: checks the script end to end in a minute or two")
    args = parser.parse_args()
    plan_sizes = (4000, 100_000)
    if args.quick:
        plan_sizes = (400, 4000)
        args.roles, args.limit, args.turns, args.http_calls = 200, 2, 2, 4
        args.max_query_tokens, args.max_answer_tokens = 96, 16

    for n in plan_sizes:
        wall, cpu, share = planning_seconds(n)
        print(f"planning {n} roles: {wall:.2f}s wall, {cpu:.2f}s CPU (target < 30 s at 100,000); paired share {share:.1%}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        o = client_overhead(args.roles, 5, args.in_flight, Path(tmp))
    print(f"client overhead, {args.roles} roles x 5 turns, {args.in_flight} in flight, instant loopback peer: "
          f"{o['full_calls']} calls, {o['full_cpu_ms']:.2f} ms CPU / {o['full_wall_ms']:.2f} ms wall per call "
          f"(target < 2 ms); at a quarter ({o['quarter_calls']} calls) {o['quarter_cpu_ms']:.2f} ms CPU per call; "
          f"RSS {o['quarter_rss_mib']:.0f} MiB at a quarter, {o['full_rss_mib']:.0f} MiB at full scale (the dialogues "
          f"table itself: {o['quarter_output_mib']:.1f} and {o['full_output_mib']:.1f} MiB; calls go out in windows, so "
          f"requests and replies in memory do not grow with the table)", flush=True)
    if args.skip_model:
        return 0

    import polars as pl

    from data_tools.simulation.pipeline import SimulationConfig
    from data_tools.simulation.roles import first_per_language, roles_from_table
    from ditto_jax.generation import Engine
    from ditto_jax.loader import load_model

    if args.characters:
        table = pl.read_parquet(args.characters)
    else:
        from data_tools.characters.build import characters_from_sample
        from data_tools.characters.config import CharactersConfig

        table = characters_from_sample(CharactersConfig(languages=("en", "zh"), profile_chars=1500))
    everyone = roles_from_table(table, source=str(args.characters or "built-in sample"))
    roles = first_per_language(everyone, args.limit)
    model, bundle = load_model("smollm2")
    engine = Engine(model, bundle, max_batch=16)
    config = dict(turns=args.turns, questions_per_pair=args.questions_per_pair, max_query_tokens=args.max_query_tokens, max_answer_tokens=args.max_answer_tokens)

    if not args.skip_batching:
        with tempfile.TemporaryDirectory() as tmp:
            rates = {}
            for label, batch in (("on", args.batch), ("off", 1)):
                warm = SimulationConfig(seed=1, **config)  # another seed: compiles the shapes, leaves the timed calls uncached
                simulate_once(engine, roles, everyone, batch, warm, Path(tmp))
                seconds, turns = simulate_once(engine, roles, everyone, batch, SimulationConfig(seed=0, **config), Path(tmp))
                rates[label] = turns / (seconds / 60)
                print(f"batching {label:3} (batch {batch}): {turns} turns in {seconds:.1f}s = {rates[label]:.1f} turns/min", flush=True)
        print(f"simulate end-to-end, {len(roles)} characters x {args.turns} turns: batching on {rates['on']:.1f} turns/min, "
              f"off {rates['off']:.1f} turns/min, ratio {rates['on'] / rates['off']:.2f}x")

    # Few new tokens per call, so the engine's share is small and the HTTP path's own cost shows.
    http_s, bare_s = http_overhead(model, engine, bundle, args.http_calls, max_tokens=args.http_tokens)
    print(f"per call (median of {args.http_calls}, {args.http_tokens} new tokens): HTTP client+server {http_s * 1000:.1f} ms, bare engine "
          f"{bare_s * 1000:.1f} ms, overhead {(http_s - bare_s) * 1000:.1f} ms/call, ratio {http_s / bare_s:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
