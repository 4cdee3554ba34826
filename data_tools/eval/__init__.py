"""`ditto-eval`: WikiRoleEval-style role-play evaluation (DESIGN.md, "Evaluation files").

- `records`: the evaluation file layout, read leniently (fields at top level or under `meta`).
- `build`: held-out characters -> one evaluation session each, questions from the simulation prompts.
- `backends`: the model under test and the judge, in process or over HTTP.
- `answer`: multi-turn answers from the model under test (system intro folded where the template needs it).
- `judging`: judge requests, lenient parsers and the paper's per-turn scores.
- `flags`: judge-free role metrics from the clean stage's own checks, one check at a time.
- `run`: answers + judgements + flags -> results file, resumable through the call cache.
- `mtbench`: MT-Bench roleplay questions, two-turn answers, single-answer 1-10 grading.
- `metrics`, `bootstrap`, `report`, `chart`: the comparison report with intervals and a bar chart.
- `cli`, `commands`: the `ditto-eval` entry point and one module per subcommand (options and summaries only).
"""
