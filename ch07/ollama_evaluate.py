"""Score instruction responses with an LLM judge (chapter 7), plus offline metrics that need no judge.

The book's judge is Llama 3 8B served by Ollama::

    ollama serve                      # in another terminal (https://ollama.com)
    ollama pull llama3
    python ch07/ollama_evaluate.py --file runs/ch07/instruction-data-with-response.json

Any OpenAI-compatible server works too (vLLM, llama.cpp's llama-server, ...)::

    python ch07/ollama_evaluate.py --file FILE --backend openai --url http://localhost:8000 --model MODEL

The offline metrics (exact match, token F1, ROUGE-L against the reference
outputs) are always printed first. Exit status: 0 when the judge scored the
entries; 1 when the judge is unreachable or failed (the reason and what to do are
printed, the offline metrics are still shown); 2 for a bad command line or file.
"""

from __future__ import annotations

import sys

from buildllm.cli import UserError, make_parser, nonnegative_int, positive_float, positive_int, run_main
from buildllm.instruction import InstructionDataError, load_instruction_file, save_json
from buildllm.judge import (BACKENDS, DEFAULT_OLLAMA_URL, JudgeError, format_metrics, make_judge, offline_metrics,
                            score_entries)


def build_parser():
    parser = make_parser(
        "Let an LLM judge score each model response from 0 to 100 against the reference output, and print exact "
        "match / token F1 / ROUGE-L, which need no judge.",
        epilog="Exit status: 0 judged; 1 judge unreachable or failed (offline metrics still printed); "
        "2 bad arguments or input file.",
    )
    parser.add_argument("--file", required=True,
                        help="JSON list of entries with instruction, input, output and the response "
                             "(instruction-data-with-response.json from gpt_instruction_finetuning.py)")
    parser.add_argument("--json-key", default="model_response", help="the field holding the model's response")
    parser.add_argument("--model", default="llama3", help="the judge model")
    parser.add_argument("--url", default=DEFAULT_OLLAMA_URL, help="the judge server's address")
    parser.add_argument("--backend", default="ollama", choices=BACKENDS,
                        help="ollama: Ollama's /api/chat; openai: any OpenAI-compatible /v1/chat/completions")
    parser.add_argument("--api-key", default=None, help="API key for --backend openai (default: $OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=positive_float, default=120.0, help="seconds to wait for each judge answer")
    parser.add_argument("--retries", type=nonnegative_int, default=2, help="extra tries when an answer is not a 0-100 number")
    parser.add_argument("--seed", type=int, default=123, help="the judge's sampling seed (temperature is 0)")
    parser.add_argument("--num-ctx", type=positive_int, default=2048, help="Ollama's context window for the judge")
    parser.add_argument("--limit", type=positive_int, default=None, help="score only the first N entries")
    parser.add_argument("--output", default=None,
                        help="also write the entries with a 'judge_score' field and a summary to this JSON file")
    return parser


def run(args) -> int:
    try:
        entries = load_instruction_file(args.file, required=("instruction", "output", args.json_key))
    except (InstructionDataError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if args.limit is not None:
        entries = entries[: args.limit]
    print(f"{len(entries)} entries from {args.file}")
    print(format_metrics(offline_metrics(entries, args.json_key)))

    try:
        judge = make_judge(args.backend, model=args.model, url=args.url, seed=args.seed, timeout=args.timeout,
                           num_ctx=args.num_ctx, **({"api_key": args.api_key} if args.backend == "openai" else {}))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        judge.preflight()
        print(f"Judge: {args.model} via {args.backend} at {judge.url}")

        def show(item, entry):
            if item.score is not None:
                print(f"Entry {item.index}: score {item.score}")
            else:
                print(f"Entry {item.index}: no score ({item.status}; the judge said {item.answers[-1]!r})")

        report = score_entries(judge, entries, args.json_key, retries=args.retries, on_item=show)
    except JudgeError as exc:
        print(f"\nThe judge is not available, so there is no judge score.\n{exc}", file=sys.stderr)
        print("The offline metrics above need no judge.", file=sys.stderr)
        return 1
    print(report.summary())
    if args.output:
        scored = [{**entry, "judge_score": item.score} for entry, item in zip(entries, report.items)]
        save_json({"summary": report.summary(), "average": report.average,
                   "invalid_answers": report.invalid_answers, "entries": scored}, args.output)
        print(f"Saved scores to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
