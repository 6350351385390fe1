"""Score instruction responses with an LLM judge (chapter 7), plus offline metrics that need no judge.

The book's judge is Llama 3 8B served by Ollama::

    ollama serve                      # in another terminal (https://ollama.com)
    ollama pull llama3
    python ch07/ollama_evaluate.py --file runs/ch07/instruction-data-with-response.json --output runs/ch07/scores.json

Any OpenAI-compatible server works too (vLLM, llama.cpp's llama-server, ...)::

    python ch07/ollama_evaluate.py --file FILE --backend openai --url http://localhost:8000 --model MODEL

No server? A small model on this computer can judge instead -- a WEAK judge (it
answers "is this correct? yes/no", and its probability of "yes" becomes the score)::

    python ch07/ollama_evaluate.py --file FILE --judge smollm2-135m-instruct

The offline metrics (exact match, token F1, ROUGE-L against the reference outputs)
are always printed first. With --output, every score is saved as soon as it arrives
(the file is rewritten atomically after each entry, so it is always complete JSON);
after an interruption, --resume asks only for the entries not scored yet. Requests
that break off are retried with growing pauses; each request has a total deadline
(--timeout), however slowly the server sends its bytes.

Exit status: 0 when the judge scored the entries; 1 when the judge is unreachable or
failed (the reason and what to do are printed, the offline metrics are still shown,
scores so far are saved); 2 for a bad command line, input or output file.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from buildllm.cli import (UserError, make_parser, nonnegative_float, nonnegative_int, positive_float, positive_int,
                          read_json_file, run_main, seed)
from buildllm.files import atomic_write_json, check_writable, remove_stale_temp_files
from buildllm.instruction import InstructionDataError, validate_entries
from buildllm.judge import (BACKENDS, DEFAULT_OLLAMA_URL, ItemScore, JudgeError, LocalJudge, ScoreReport,
                            format_metrics, make_judge, offline_metrics, score_entries)

# What to change on this command line when the judge blames one setting (JudgeError.setting).
FLAG_HINTS = {
    "url": "the server's address: --url",
    "timeout": "the time allowed per request: --timeout SECONDS",
    "model": "the judge model: --model (or --judge for a local model)",
    "backend": "the kind of server: --backend ollama|openai",
    "api_key": "the API key: --api-key or $OPENAI_API_KEY",
}


def build_parser():
    parser = make_parser(
        "Let an LLM judge score each model response from 0 to 100 against the reference output, and print exact "
        "match / token F1 / ROUGE-L, which need no judge.",
        epilog="Exit status: 0 judged; 1 judge unreachable or failed (offline metrics still printed, scores so far "
        "saved); 2 bad arguments, input or output file.",
    )
    parser.add_argument("--file", required=True,
                        help="JSON list of entries with instruction, input, output and the response "
                             "(instruction-data-with-response.json from gpt_instruction_finetuning.py)")
    parser.add_argument("--json-key", default="model_response", help="the field holding the model's response")
    parser.add_argument("--judge", default=None, metavar="NAME|PATH",
                        help="judge with a model on this computer instead of a server, e.g. smollm2-135m-instruct "
                             "(a WEAK judge: far smaller than the book's Llama 3 8B)")
    parser.add_argument("--models-dir", default=None, metavar="DIR", help="where --judge looks for its weights")
    parser.add_argument("--model", default="llama3", help="the judge model on the server")
    parser.add_argument("--url", default=DEFAULT_OLLAMA_URL, help="the judge server's address")
    parser.add_argument("--backend", default="ollama", choices=BACKENDS,
                        help="ollama: Ollama's /api/chat; openai: any OpenAI-compatible /v1/chat/completions")
    parser.add_argument("--api-key", default=None, help="API key for --backend openai (default: $OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=positive_float, default=120.0,
                        help="seconds allowed for each judge answer, in total (not per read)")
    parser.add_argument("--connection-retries", type=nonnegative_int, default=3,
                        help="extra tries when the connection breaks off")
    parser.add_argument("--backoff", type=nonnegative_float, default=1.0,
                        help="seconds to wait before the first connection retry (doubled for each next one)")
    parser.add_argument("--retries", type=nonnegative_int, default=2, help="extra tries when an answer is not a 0-100 number")
    parser.add_argument("--seed", type=seed, default=123, help="the judge's sampling seed (temperature is 0)")
    parser.add_argument("--num-ctx", type=positive_int, default=2048, help="Ollama's context window for the judge")
    parser.add_argument("--limit", type=positive_int, default=None, help="score only the first N entries")
    parser.add_argument("--output", default=None,
                        help="save the entries with a 'judge_score' field and a summary to this JSON file, "
                             "rewritten after every entry")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run saved in --output: ask only for entries without a score")
    again.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return parser


def entries_fingerprint(entries: list, json_key: str) -> str:
    """SHA-256 of what is being judged (entries and the response field), to tell whether a saved run matches."""
    blob = json.dumps({"json_key": json_key, "entries": entries}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_saved_run(path: Path, fingerprint: str, judge_model: str) -> dict[int, ItemScore]:
    """The scores an earlier run saved in `path` for the same entries and judge model (index -> ItemScore).

    The judge is known by its kind and model ("ollama:llama3"), not its address: a server
    that moved to another port may finish the run it started.
    """
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["input_sha256"] != fingerprint:
            raise UserError(f"{path} holds scores for other entries (another --file, --json-key or --limit?). "
                            f"Resume with the same options, or start over with --overwrite.")
        if saved["judge_model"] != judge_model:
            raise UserError(f"{path} was scored by another judge ({saved['judge']}); mixing judges makes the "
                            f"average meaningless. Resume with that judge, or start over with --overwrite.")
        return {e["index"]: ItemScore(e["index"], e["judge_score"], e["judge_status"], list(e["judge_answers"]))
                for e in saved["entries"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"Cannot resume from {path}: it is not a scores file written by this script ({exc}). "
                        f"Start over with --overwrite.") from None


def save_run(path: Path, report: ScoreReport, entries: list, meta: dict, complete: bool) -> None:
    """Write the scores so far to `path` atomically: always complete JSON, whatever happens next."""
    scored = [{**entries[item.index], "index": item.index, "judge_score": item.score,
               "judge_status": item.status, "judge_answers": item.answers} for item in report.items]
    atomic_write_json({**meta, "complete": complete, "num_entries": len(entries), "num_scored": len(scored),
                       "summary": report.summary(), "average": report.average,
                       "invalid_answers": report.invalid_answers, "entries": scored}, path, indent=2)


def prepare_output(args) -> Path | None:
    """Check --output before any request: writable, and not an earlier run unless --resume or --overwrite."""
    if args.output is None:
        if args.resume:
            raise UserError("--resume continues the run saved in --output; give --output FILE.")
        return None
    path = Path(args.output)
    if path.is_dir():
        raise UserError(f"--output {path} is a folder; give a file name, e.g. {path / 'scores.json'}.")
    try:
        check_writable(path)
    except PermissionError as exc:
        raise UserError(f"--output: {exc}") from None
    remove_stale_temp_files(path.parent, path.name)  # left by a run killed while writing
    if path.exists() and not (args.resume or args.overwrite):
        raise UserError(f"{path} already exists (an earlier run). Continue it with --resume, or replace it with "
                        f"--overwrite.")
    if args.resume and not path.exists():
        raise UserError(f"--resume: there is no {path} to continue; run without --resume to start.")
    return path


def explain(exc: JudgeError) -> str:
    hint = FLAG_HINTS.get(exc.setting or "")
    return f"{exc}\n(On this command line, change {hint}.)" if hint else str(exc)


def run(args) -> int:
    entries = read_json_file(args.file, "--file", expected=f"a JSON list of entries with instruction, input, output "
                                                          f"and {args.json_key}")
    try:
        validate_entries(entries, required=("instruction", "output", args.json_key))
    except InstructionDataError as exc:
        raise UserError(f"--file {args.file}: {exc}") from None
    if args.limit is not None:
        entries = entries[: args.limit]
    output = prepare_output(args)
    print(f"{len(entries)} entries from {args.file}")
    metrics = offline_metrics(entries, args.json_key)
    print(format_metrics(metrics))

    if args.judge is not None:
        judge = LocalJudge(args.judge, models_root=args.models_dir, seed=args.seed)
    else:
        try:
            judge = make_judge(args.backend, model=args.model, url=args.url, seed=args.seed, timeout=args.timeout,
                               num_ctx=args.num_ctx, connection_retries=args.connection_retries,
                               backoff=args.backoff, **({"api_key": args.api_key} if args.backend == "openai" else {}))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    judge_model = f"local:{args.judge}" if args.judge is not None else f"{args.backend}:{args.model}"
    meta = {"judge": judge.description, "judge_model": judge_model, "weak_judge": judge.weak, "file": str(args.file), "json_key": args.json_key,
            "input_sha256": entries_fingerprint(entries, args.json_key), "offline_metrics": metrics}
    done = read_saved_run(output, meta["input_sha256"], judge_model) if args.resume else {}
    if done:
        print(f"Resuming {output}: {len(done)} of {len(entries)} entries already scored.")

    scored: dict[int, ItemScore] = dict(done)

    def keep(item, entry):
        scored[item.index] = item
        if item.score is not None:
            print(f"Entry {item.index}: score {item.score}")
        else:
            print(f"Entry {item.index}: no score ({item.status}; the judge said {item.answers[-1]!r})")
        if output is not None:
            save_run(output, ScoreReport(sorted(scored.values(), key=lambda i: i.index)), entries, meta, False)

    try:
        judge.preflight()
        print(f"Judge: {judge.description}")
        if judge.weak:
            print("Caution: a weak judge. Its scores are a rough signal, not comparable with a large judge's "
                  "(the book: Llama 3 8B); check it on answers known to be right and wrong before trusting it.")
        report = score_entries(judge, entries, args.json_key, retries=args.retries, on_item=keep, done=done)
    except JudgeError as exc:
        print(f"\nThe judge is not available, so there is no (complete) judge score.\n{explain(exc)}",
              file=sys.stderr)
        print("The offline metrics above need no judge.", file=sys.stderr)
        if output is not None and len(scored) > len(done):
            print(f"The {len(scored)} entries scored so far are saved in {output}; add --resume to continue.",
                  file=sys.stderr)
        return 1
    print(("Weak judge -- " if judge.weak else "") + report.summary())
    if output is not None:
        save_run(output, report, entries, meta, True)
        print(f"Saved scores to {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
