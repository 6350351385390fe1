"""Evaluating instruction responses (chapter 7): an LLM judge over HTTP, and metrics that need no server.

The book lets a larger model (Llama 3 8B served by Ollama) grade each response
from 0 to 100. That needs a running server, so this module has two halves:

* judges: ``OllamaJudge`` speaks Ollama's ``POST /api/chat`` (streamed JSON
  lines or one JSON object); ``OpenAIJudge`` speaks any OpenAI-compatible
  ``POST /v1/chat/completions``. ``judge.preflight()`` says exactly what is
  missing before any scoring starts. ``score_entries`` asks for a score per
  entry, parses it robustly, retries, and counts every answer it could not use.
* offline metrics: ``exact_match``, ``token_f1`` and ``rouge_l`` (our own
  longest-common-subsequence code) compare each response with the reference
  output, so every run produces numbers even without a judge.

Only the Python standard library is used for HTTP (``urllib``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .instruction import format_input, validate_entries

DEFAULT_OLLAMA_URL = "http://localhost:11434"
BACKENDS = ("ollama", "openai")
SCORE_STATUSES = ("ok", "out_of_range", "not_a_number")


class JudgeError(RuntimeError):
    """The judge could not give an answer; the message says what to do."""


class JudgeUnavailableError(JudgeError):
    """The judge server is not reachable, is not the expected server, or lacks the model."""


class JudgeTimeoutError(JudgeError):
    """The judge server did not answer in time."""


# --------------------------------------------------------------------------- the scoring prompt


def make_scoring_prompt(entry: dict, json_key: str = "model_response") -> str:
    """Return the request to grade `entry[json_key]` against `entry["output"]` with one integer from 0 to 100."""
    return (
        "You are grading the answer of an assistant.\n\n"
        f"The task given to the assistant:\n{format_input(entry)}\n\n"
        f"A correct answer:\n{entry['output']}\n\n"
        f"The assistant's answer:\n{entry[json_key]}\n\n"
        "Rate the assistant's answer on a scale from 0 to 100, where 100 means it is as good as the correct "
        "answer. Respond with the integer number only."
    )


RETRY_REMINDER = "\n\nReply with one whole number between 0 and 100 and nothing else."


# --------------------------------------------------------------------------- HTTP helpers


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


def _open(url: str, payload: dict | None, timeout: float, headers: dict | None = None):
    """Open `url` (POST JSON if `payload`, else GET); loopback addresses bypass any HTTP proxy."""
    data = json.dumps(payload).encode("utf-8") if payload is not None else None
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
    )
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


def _is_timeout(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (TimeoutError, socket.timeout))


def _is_refused(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)


def _http_json(url: str, timeout: float, headers: dict | None = None) -> tuple[int, object | str]:
    """GET `url`; return (status, parsed JSON or the raw text when it is not JSON). Connection errors propagate."""
    try:
        with _open(url, None, timeout, headers) as response:
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode("utf-8", "replace")
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _normalize_base_url(url: str, strip_suffix: str = "") -> str:
    url = url.strip().rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"The judge URL {url!r} needs a scheme, e.g. http://localhost:11434.")
    if strip_suffix and url.endswith(strip_suffix):
        url = url[: -len(strip_suffix)]
    return url


# --------------------------------------------------------------------------- judges


class OllamaJudge:
    """A judge served by Ollama (``POST /api/chat``), deterministic: fixed seed, temperature 0."""

    def __init__(self, model: str = "llama3", url: str = DEFAULT_OLLAMA_URL, seed: int = 123,
                 temperature: float = 0.0, num_ctx: int = 2048, timeout: float = 120.0, stream: bool = True):
        self.model = model
        self.url = _normalize_base_url(url)
        self.seed, self.temperature, self.num_ctx = seed, temperature, num_ctx
        self.timeout, self.stream = timeout, stream

    def _unreachable(self, exc: BaseException) -> JudgeError:
        if _is_timeout(exc):
            return JudgeTimeoutError(
                f"The server at {self.url} did not answer within {self.timeout:g} s. If Ollama is busy "
                f"(the first request loads the model), wait and retry, or allow more time with --timeout."
            )
        if _is_refused(exc):
            return JudgeUnavailableError(
                f"No server answers at {self.url} (connection refused). Start Ollama with `ollama serve` in "
                f"another terminal (install it from https://ollama.com), then run `ollama pull {self.model}`. "
                f"If Ollama runs on another address, pass it with --url."
            )
        return JudgeUnavailableError(f"Cannot reach {self.url}: {getattr(exc, 'reason', exc)}. Check --url.")

    def _model_names(self, timeout: float) -> list[str]:
        """Return the names of the pulled models (``GET /api/tags``), or raise with advice."""
        try:
            status, body = _http_json(f"{self.url}/api/tags", timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise JudgeUnavailableError(
                f"Something answers at {self.url}, but it is not Ollama: GET /api/tags gave HTTP {status} "
                f"{_short(body)!r}. Another program uses this port: stop it, or start Ollama on a free port "
                f"(OLLAMA_HOST=127.0.0.1:11435 ollama serve) and pass --url http://127.0.0.1:11435."
            )
        return [m.get("name") or m.get("model", "") for m in body["models"] if isinstance(m, dict)]

    def preflight(self, timeout: float = 5.0) -> None:
        """Check that Ollama answers at the URL and has the model pulled; raise JudgeUnavailableError if not."""
        names = self._model_names(min(timeout, self.timeout))
        wanted = self.model if ":" in self.model else f"{self.model}:latest"  # "llama3" means "llama3:latest"
        if wanted not in names and self.model not in names:
            available = ", ".join(names) if names else "none"
            raise JudgeUnavailableError(
                f"Ollama runs at {self.url}, but the model {self.model!r} is not pulled (pulled models: "
                f"{available}). Run `ollama pull {self.model}` and try again."
            )

    def chat(self, prompt: str, seed: int | None = None) -> str:
        """Send `prompt` as one user message and return the model's whole answer."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": {"seed": self.seed if seed is None else seed, "temperature": self.temperature,
                        "num_ctx": self.num_ctx},
            "stream": self.stream,
        }
        deadline = time.monotonic() + self.timeout
        try:
            with _open(f"{self.url}/api/chat", payload, self.timeout) as response:
                if not self.stream:
                    return self._parse_message(response.read().decode("utf-8"))
                pieces = []
                for raw in response:  # streamed: one JSON object per line
                    if time.monotonic() > deadline:
                        raise JudgeTimeoutError(
                            f"The answer from {self.url} took longer than {self.timeout:g} s; raise --timeout."
                        )
                    line = raw.decode("utf-8").strip()
                    if not line:
                        continue
                    chunk = self._parse_chunk(line)
                    pieces.append(chunk.get("message", {}).get("content", ""))
                    if chunk.get("done"):
                        return "".join(pieces)
                raise JudgeError(
                    f"The stream from {self.url}/api/chat ended without a final 'done' message; "
                    f"the server may have crashed. Check the Ollama log and retry."
                )
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        except http.client.HTTPException as exc:
            raise JudgeError(f"The connection to {self.url} broke off ({exc!r}); retry.") from None

    def _parse_chunk(self, line: str) -> dict:
        try:
            chunk = json.loads(line)
        except json.JSONDecodeError:
            raise JudgeError(
                f"{self.url}/api/chat sent something that is not Ollama's JSON: {_short(line)!r}. "
                f"Is --url pointing at Ollama (use --backend openai for OpenAI-compatible servers)?"
            ) from None
        if not isinstance(chunk, dict):
            raise JudgeError(f"{self.url}/api/chat sent {_short(line)!r}, not a JSON object.")
        if "error" in chunk:
            raise JudgeError(f"Ollama reported an error: {chunk['error']}")
        return chunk

    def _parse_message(self, body: str) -> str:
        chunk = self._parse_chunk(body.strip())
        return chunk.get("message", {}).get("content", "")

    def _http_error(self, exc: urllib.error.HTTPError) -> JudgeError:
        body = exc.read().decode("utf-8", "replace")
        if exc.code == 404 and "not found" in body:
            return JudgeUnavailableError(
                f"Ollama does not have the model {self.model!r} ({_short(body)}). Run `ollama pull {self.model}`."
            )
        return JudgeError(f"{self.url}/api/chat answered HTTP {exc.code}: {_short(body)}")


class OpenAIJudge:
    """A judge behind any OpenAI-compatible endpoint (``POST /v1/chat/completions``): vLLM, llama.cpp, Ollama..."""

    def __init__(self, model: str, url: str = "http://localhost:8000", api_key: str | None = None,
                 seed: int = 123, temperature: float = 0.0, timeout: float = 120.0):
        self.model = model
        self.url = _normalize_base_url(url, strip_suffix="/v1")  # accept both .../v1 and the bare address
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.seed, self.temperature, self.timeout = seed, temperature, timeout

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _unreachable(self, exc: BaseException) -> JudgeError:
        if _is_timeout(exc):
            return JudgeTimeoutError(
                f"The server at {self.url} did not answer within {self.timeout:g} s; retry or raise --timeout."
            )
        if _is_refused(exc):
            return JudgeUnavailableError(
                f"No server answers at {self.url} (connection refused). Start your OpenAI-compatible server "
                f"(for example `vllm serve MODEL`, `llama-server -m MODEL.gguf`, or `ollama serve`, which also "
                f"serves /v1), or pass its address with --url."
            )
        return JudgeUnavailableError(f"Cannot reach {self.url}: {getattr(exc, 'reason', exc)}. Check --url.")

    def preflight(self, timeout: float = 5.0) -> None:
        """Check that ``GET /v1/models`` answers and lists the model; raise JudgeUnavailableError if not."""
        try:
            status, body = _http_json(f"{self.url}/v1/models", min(timeout, self.timeout), self._headers())
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        if status in (401, 403):
            raise JudgeUnavailableError(
                f"{self.url} refused the request (HTTP {status}): set the API key with --api-key or OPENAI_API_KEY."
            )
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise JudgeUnavailableError(
                f"Something answers at {self.url}, but not as an OpenAI-compatible server: GET /v1/models gave "
                f"HTTP {status} {_short(body)!r}. Check --url (and --backend: use 'ollama' for Ollama's own API)."
            )
        names = [m.get("id", "") for m in body["data"] if isinstance(m, dict)]
        if self.model not in names:
            raise JudgeUnavailableError(
                f"The server at {self.url} does not offer the model {self.model!r} (it offers: "
                f"{', '.join(names) or 'none'}). Pass one of those with --model, or load the model on the server."
            )

    def chat(self, prompt: str, seed: int | None = None) -> str:
        """Send `prompt` as one user message and return the answer's text."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "seed": self.seed if seed is None else seed,
        }
        try:
            with _open(f"{self.url}/v1/chat/completions", payload, self.timeout, self._headers()) as response:
                body = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            detail = _short(exc.read().decode("utf-8", "replace"))
            raise JudgeError(f"{self.url}/v1/chat/completions answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            return json.loads(body)["choices"][0]["message"]["content"] or ""
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"{self.url}/v1/chat/completions sent an answer without choices[0].message.content: "
                f"{_short(body)!r}. Is this an OpenAI-compatible server?"
            ) from None


def make_judge(backend: str = "ollama", model: str = "llama3", url: str = DEFAULT_OLLAMA_URL, **kwargs):
    """Return an OllamaJudge or OpenAIJudge for `backend` ("ollama" or "openai")."""
    if backend == "ollama":
        return OllamaJudge(model=model, url=url, **kwargs)
    if backend == "openai":
        kwargs.pop("num_ctx", None)  # an Ollama option; OpenAI's API has no such field
        kwargs.pop("stream", None)
        return OpenAIJudge(model=model, url=url, **kwargs)
    raise ValueError(f"Unknown judge backend {backend!r}; choose one of {', '.join(BACKENDS)}.")


# --------------------------------------------------------------------------- parsing and scoring

_NUMBER = r"[-+]?\d+(?:\.\d+)?"


def parse_score(answer: str) -> tuple[int | None, str]:
    """Read a 0-100 score from the judge's `answer`; return (score, "ok") or (None, "out_of_range"/"not_a_number").

    Accepted: the number alone ("85", " 85.\\n"), "85/100", "85 out of 100", or
    text holding exactly one number ("Score: 85"). Decimals are rounded half up.
    Several numbers, or none, count as "not_a_number".
    """
    text = answer.strip()
    core = text.rstrip(".!").strip()
    if re.fullmatch(_NUMBER, core):
        value = float(core)
    else:
        scaled = re.search(rf"({_NUMBER})\s*(?:/|out of)\s*100\b", text)
        numbers = re.findall(_NUMBER, text)
        if scaled:
            value = float(scaled.group(1))
        elif len(numbers) == 1:
            value = float(numbers[0])
        else:
            return None, "not_a_number"
    if not 0 <= value <= 100:
        return None, "out_of_range"
    return int(value + 0.5), "ok"


@dataclass
class ItemScore:
    """The judge's verdict on one entry: the score (None if unusable), its status and every raw answer."""

    index: int
    score: int | None
    status: str
    answers: list[str] = field(default_factory=list)


@dataclass
class ScoreReport:
    """All item scores, with counts of the answers that could not be used."""

    items: list[ItemScore]

    @property
    def scores(self) -> list[int]:
        """The valid scores."""
        return [item.score for item in self.items if item.score is not None]

    @property
    def average(self) -> float | None:
        """The mean of the valid scores, or None if there is none."""
        return sum(self.scores) / len(self.scores) if self.scores else None

    @property
    def num_unscored(self) -> int:
        """Entries left without a score after all retries."""
        return sum(item.score is None for item in self.items)

    @property
    def invalid_answers(self) -> dict[str, int]:
        """How many answers (over all attempts) were out of range or not a number."""
        counts = {"out_of_range": 0, "not_a_number": 0}
        for item in self.items:
            for answer in item.answers:
                status = parse_score(answer)[1]
                if status != "ok":
                    counts[status] += 1
        return counts

    @property
    def num_retries(self) -> int:
        """Extra requests made because an answer was not usable."""
        return sum(len(item.answers) - 1 for item in self.items)

    def summary(self) -> str:
        """One paragraph: average score, how many items were scored, and the invalid answers counted."""
        bad = self.invalid_answers
        avg = f"{self.average:.2f}" if self.average is not None else "n/a"
        return (
            f"Average judge score: {avg} over {len(self.scores)} of {len(self.items)} entries. "
            f"Unscored entries: {self.num_unscored}. Invalid answers: {bad['not_a_number']} not a number, "
            f"{bad['out_of_range']} out of range (retries: {self.num_retries})."
        )


def score_entries(
    judge,
    entries: Sequence[dict],
    json_key: str = "model_response",
    retries: int = 2,
    progress: bool = True,
    on_item: Callable[[ItemScore, dict], None] | None = None,
) -> ScoreReport:
    """Ask `judge` to grade each entry's `json_key` (up to 1 + `retries` tries each) and return a ScoreReport."""
    from tqdm import tqdm

    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}.")
    validate_entries(list(entries), required=("instruction", "output", json_key))
    items = []
    for index, entry in enumerate(tqdm(entries, desc="Scoring entries", disable=not progress)):
        prompt = make_scoring_prompt(entry, json_key)
        item = ItemScore(index, None, "not_a_number")
        for attempt in range(retries + 1):
            # A retry repeats the request with a firmer reminder and another seed (temperature 0 alone
            # would give the same answer again).
            answer = judge.chat(prompt if attempt == 0 else prompt + RETRY_REMINDER, seed=judge.seed + attempt)
            item.answers.append(answer)
            item.score, item.status = parse_score(answer)
            if item.score is not None:
                break
        items.append(item)
        if on_item is not None:
            on_item(item, entry)
    return ScoreReport(items)


# --------------------------------------------------------------------------- offline metrics


def normalize_tokens(text: str) -> list[str]:
    """Lower-case word tokens of `text` (punctuation and extra spaces dropped): what the offline metrics compare."""
    return re.findall(r"\w+", text.lower())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if both texts have the same normalized tokens, else 0.0."""
    return float(normalize_tokens(prediction) == normalize_tokens(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the bag of normalized tokens shared by `prediction` and `reference` (1.0 if both are empty)."""
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of `a` and `b` (dynamic programming, two rows)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: precision and recall of the longest common subsequence of normalized tokens."""
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def offline_metrics(entries: Sequence[dict], json_key: str = "model_response", reference_key: str = "output") -> dict:
    """Average exact match, token F1 and ROUGE-L (each in [0, 1]) of `json_key` against `reference_key`."""
    validate_entries(list(entries), required=(reference_key, json_key))
    n = len(entries)
    if n == 0:
        return {"n": 0, "exact_match": float("nan"), "token_f1": float("nan"), "rouge_l": float("nan")}
    pairs = [(e[json_key], e[reference_key]) for e in entries]
    return {
        "n": n,
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / n,
        "token_f1": sum(token_f1(p, r) for p, r in pairs) / n,
        "rouge_l": sum(rouge_l(p, r) for p, r in pairs) / n,
    }


def format_metrics(metrics: dict) -> str:
    """One line: the offline metrics as percentages."""
    return (
        f"Offline metrics on {metrics['n']} responses: exact match {100 * metrics['exact_match']:.2f}%, "
        f"token F1 {100 * metrics['token_f1']:.2f}%, ROUGE-L {100 * metrics['rouge_l']:.2f}%"
    )
