"""Evaluating instruction responses (chapter 7): an LLM judge, and metrics that need no judge.

The book lets a larger model (Llama 3 8B served by Ollama) grade each response
from 0 to 100. That needs a running server, so this module has three parts:

* server judges: ``OllamaJudge`` speaks Ollama's ``POST /api/chat`` (streamed JSON
  lines or one JSON object); ``OpenAIJudge`` speaks any OpenAI-compatible
  ``POST /v1/chat/completions``. ``judge.preflight()`` says exactly what is missing
  before any scoring starts. Every request has a total deadline (a server that
  sends its answer byte by byte cannot hold it longer), and a connection that
  breaks off is retried with growing pauses (backoff).
* a local judge: ``LocalJudge`` asks a small instruction-tuned model on this
  computer (e.g. SmolLM2-135M-Instruct) whether a response is correct and turns
  its probability of "Yes" into a score. No server, no network -- and a *weak*
  judge: far smaller than the book's, its scores are a rough signal at best.
* offline metrics: ``exact_match``, ``token_f1`` and ``rouge_l`` (our own
  longest-common-subsequence code) compare each response with the reference
  output, so every run produces numbers even without a judge.

``score_entries`` asks any of these judges for a score per entry, parses it
robustly, retries unusable answers, counts every answer it could not use, and can
skip entries already scored (to resume an interrupted run).

Messages say what is wrong and what to change in plain words; the errors carry a
``setting`` ("url", "timeout", "model", "backend", "api_key") so that a script can
add the matching command-line flag. Only the Python standard library is used for
HTTP (``urllib``).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# One request, one total deadline: the watchdog and connection handlers the downloads use.
from .download import _Deadline, _HTTPHandler, _HTTPSHandler
from .instruction import format_input, validate_entries

DEFAULT_OLLAMA_URL = "http://localhost:11434"
BACKENDS = ("ollama", "openai")
SCORE_STATUSES = ("ok", "out_of_range", "not_a_number")
SETTINGS = ("url", "timeout", "model", "backend", "api_key")


class JudgeError(RuntimeError):
    """The judge could not give an answer; the message says what to do.

    ``setting`` names what the user should change, when one thing is to blame:
    "url", "timeout", "model", "backend" or "api_key" (else None).
    """

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class JudgeUnavailableError(JudgeError):
    """The judge is not reachable, is not the expected server, or lacks the model."""


class JudgeTimeoutError(JudgeError):
    """The judge did not finish its answer within the total time allowed for one request."""


class JudgeConnectionError(JudgeError):
    """The connection broke off (reset, closed early, stream cut short); such requests are retried."""


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


# --------------------------------------------------------------------------- HTTP with a total deadline


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


def _opener(url: str, deadline: _Deadline) -> urllib.request.OpenerDirector:
    """An opener whose connections hand their socket to `deadline` (see `buildllm.download`); loopback bypasses proxies."""
    handlers: list = [_HTTPHandler(deadline), _HTTPSHandler(deadline)]
    if _is_loopback(url):
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _open(url: str, payload: dict | None, timeout: float, deadline: _Deadline, headers: dict | None = None):
    """Open `url` (POST JSON if `payload`, else GET); `deadline` cuts the connection when its time is up."""
    data = json.dumps(payload).encode("utf-8") if payload is not None else None
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
    )
    return _opener(url, deadline).open(request, timeout=timeout)


def _reason(exc: BaseException) -> BaseException:
    reason = getattr(exc, "reason", exc)
    return reason if isinstance(reason, BaseException) else exc


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(_reason(exc), (TimeoutError, socket.timeout))


def _is_refused(exc: BaseException) -> bool:
    return isinstance(_reason(exc), ConnectionRefusedError)


def _is_broken(exc: BaseException) -> bool:
    """True for a connection that broke off after it was made (worth retrying)."""
    reason = _reason(exc)
    return isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                               http.client.IncompleteRead, http.client.RemoteDisconnected,
                               http.client.BadStatusLine))


def _http_json(url: str, timeout: float, headers: dict | None = None) -> tuple[int, object | str]:
    """GET `url`; return (status, parsed JSON or the raw text when it is not JSON). Connection errors propagate."""
    deadline = _Deadline(timeout)
    try:
        with _open(url, None, timeout, deadline, headers) as response:
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        if deadline.expired:
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        raise
    finally:
        deadline.close()
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


# --------------------------------------------------------------------------- server judges


class _ServerJudge:
    """What both server judges share: one request with a total deadline, retried when the connection breaks."""

    weak = False
    url: str
    timeout: float
    connection_retries: int
    backoff: float

    def _start_advice(self) -> str:
        """What to do when nothing answers at the address (each server says how to start it)."""
        raise NotImplementedError

    def _unreachable(self, exc: BaseException) -> JudgeError:
        if _is_timeout(exc):
            return self._timeout_error()
        if _is_refused(exc):
            return JudgeUnavailableError(f"No server answers at {self.url} (connection refused). "
                                         f"{self._start_advice()}", setting="url")
        return JudgeUnavailableError(f"Cannot reach {self.url}: {_reason(exc)}. Check the address.", setting="url")

    def _timeout_error(self) -> JudgeTimeoutError:
        return JudgeTimeoutError(
            f"The server at {self.url} did not finish its answer within {self.timeout:g} s. If it is busy (the "
            f"first request loads the model), wait and retry, or allow more time per request.",
            setting="timeout",
        )

    def _request(self, path: str, payload: dict, read: Callable, headers: dict | None = None):
        """POST `payload` to `path`, then `read(response)`; retry when the connection breaks off."""
        attempts = self.connection_retries + 1
        for attempt in range(attempts):
            try:
                return self._request_once(path, payload, read, headers)
            except JudgeConnectionError as exc:
                if attempt == attempts - 1:
                    raise JudgeConnectionError(
                        f"{exc} Gave up after {attempts} attempt(s). Check that the server is stable (its log may "
                        f"say why it dropped the connection), then run again.") from None
                time.sleep(self.backoff * 2 ** attempt)  # 1x, 2x, 4x ... the base pause
        raise AssertionError("unreachable")

    def _request_once(self, path: str, payload: dict, read: Callable, headers: dict | None):
        deadline = _Deadline(self.timeout)  # a watchdog for the whole request, however slowly bytes arrive
        try:
            with _open(f"{self.url}{path}", payload, self.timeout, deadline, headers) as response:
                return read(response)
        except urllib.error.HTTPError as exc:
            if deadline.expired:
                raise self._timeout_error() from None
            raise self._http_error(exc) from None
        except JudgeError:
            if deadline.expired:
                raise self._timeout_error() from None
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired or _is_timeout(exc):
                raise self._timeout_error() from None
            if _is_broken(exc):
                raise JudgeConnectionError(
                    f"The connection to {self.url} broke off ({type(_reason(exc)).__name__}).") from None
            raise self._unreachable(exc) from None
        finally:
            deadline.close()

    def _http_error(self, exc: urllib.error.HTTPError) -> JudgeError:
        body = exc.read().decode("utf-8", "replace")
        return JudgeError(f"{exc.url or self.url} answered HTTP {exc.code}: {_short(body)}")


class OllamaJudge(_ServerJudge):
    """A judge served by Ollama (``POST /api/chat``), deterministic: fixed seed, temperature 0."""

    def __init__(self, model: str = "llama3", url: str = DEFAULT_OLLAMA_URL, seed: int = 123,
                 temperature: float = 0.0, num_ctx: int = 2048, timeout: float = 120.0, stream: bool = True,
                 connection_retries: int = 3, backoff: float = 1.0):
        self.model = model
        self.url = _normalize_base_url(url)
        self.seed, self.temperature, self.num_ctx = seed, temperature, num_ctx
        self.timeout, self.stream = timeout, stream
        self.connection_retries, self.backoff = connection_retries, backoff

    @property
    def description(self) -> str:
        """One line for people: which model, served how."""
        return f"{self.model} via Ollama at {self.url}"

    def _start_advice(self) -> str:
        return (f"Start Ollama with `ollama serve` in another terminal (install it from https://ollama.com), then "
                f"run `ollama pull {self.model}`. If Ollama runs on another address, give that address instead.")

    def _model_names(self, timeout: float) -> list[str]:
        """Return the names of the pulled models (``GET /api/tags``), or raise with advice."""
        try:
            status, body = _http_json(f"{self.url}/api/tags", timeout)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise JudgeUnavailableError(
                f"Something answers at {self.url}, but it is not Ollama: GET /api/tags gave HTTP {status} "
                f"{_short(body)!r}. Another program uses this port: stop it, or start Ollama on a free port "
                f"(OLLAMA_HOST=127.0.0.1:11435 ollama serve) and use http://127.0.0.1:11435 as the address.",
                setting="url",
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
                f"{available}). Run `ollama pull {self.model}` and try again.", setting="model",
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
        return self._request("/api/chat", payload, self._read_stream if self.stream else self._read_whole)

    def _read_whole(self, response) -> str:
        return self._parse_chunk(response.read().decode("utf-8", "replace").strip()).get("message", {}).get(
            "content", "")

    def _read_stream(self, response) -> str:
        pieces = []
        for raw in response:  # streamed: one JSON object per line
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            chunk = self._parse_chunk(line)
            pieces.append(chunk.get("message", {}).get("content", ""))
            if chunk.get("done"):
                return "".join(pieces)
        raise JudgeConnectionError(
            f"The stream from {self.url}/api/chat ended without a final 'done' message (the server may have "
            f"restarted).")

    def _parse_chunk(self, line: str) -> dict:
        try:
            chunk = json.loads(line)
        except json.JSONDecodeError:
            raise JudgeError(
                f"{self.url}/api/chat sent something that is not Ollama's JSON: {_short(line)!r}. Is the address "
                f"Ollama's? (OpenAI-compatible servers need the 'openai' backend.)", setting="backend",
            ) from None
        if not isinstance(chunk, dict):
            raise JudgeError(f"{self.url}/api/chat sent {_short(line)!r}, not a JSON object.", setting="backend")
        if "error" in chunk:
            raise JudgeError(f"Ollama reported an error: {chunk['error']}")
        return chunk

    def _http_error(self, exc: urllib.error.HTTPError) -> JudgeError:
        body = exc.read().decode("utf-8", "replace")
        if exc.code == 404 and "not found" in body:
            return JudgeUnavailableError(
                f"Ollama does not have the model {self.model!r} ({_short(body)}). Run `ollama pull {self.model}`.",
                setting="model",
            )
        return JudgeError(f"{self.url}/api/chat answered HTTP {exc.code}: {_short(body)}")


class OpenAIJudge(_ServerJudge):
    """A judge behind any OpenAI-compatible endpoint (``POST /v1/chat/completions``): vLLM, llama.cpp, Ollama..."""

    def __init__(self, model: str, url: str = "http://localhost:8000", api_key: str | None = None,
                 seed: int = 123, temperature: float = 0.0, timeout: float = 120.0,
                 connection_retries: int = 3, backoff: float = 1.0):
        self.model = model
        self.url = _normalize_base_url(url, strip_suffix="/v1")  # accept both .../v1 and the bare address
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.seed, self.temperature, self.timeout = seed, temperature, timeout
        self.connection_retries, self.backoff = connection_retries, backoff

    @property
    def description(self) -> str:
        """One line for people: which model, served how."""
        return f"{self.model} via an OpenAI-compatible server at {self.url}"

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _start_advice(self) -> str:
        return ("Start your OpenAI-compatible server (for example `vllm serve MODEL`, `llama-server -m MODEL.gguf`, "
                "or `ollama serve`, which also serves /v1), or give its address.")

    def preflight(self, timeout: float = 5.0) -> None:
        """Check that ``GET /v1/models`` answers and lists the model; raise JudgeUnavailableError if not."""
        try:
            status, body = _http_json(f"{self.url}/v1/models", min(timeout, self.timeout), self._headers())
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        if status in (401, 403):
            raise JudgeUnavailableError(
                f"{self.url} refused the request (HTTP {status}): it needs an API key (or another one); set "
                f"OPENAI_API_KEY or give the key.", setting="api_key",
            )
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise JudgeUnavailableError(
                f"Something answers at {self.url}, but not as an OpenAI-compatible server: GET /v1/models gave "
                f"HTTP {status} {_short(body)!r}. Check the address (for Ollama's own API use the 'ollama' "
                f"backend).", setting="url",
            )
        names = [m.get("id", "") for m in body["data"] if isinstance(m, dict)]
        if self.model not in names:
            raise JudgeUnavailableError(
                f"The server at {self.url} does not offer the model {self.model!r} (it offers: "
                f"{', '.join(names) or 'none'}). Choose one of those, or load the model on the server.",
                setting="model",
            )

    def chat(self, prompt: str, seed: int | None = None) -> str:
        """Send `prompt` as one user message and return the answer's text."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "seed": self.seed if seed is None else seed,
        }
        return self._request("/v1/chat/completions", payload, self._read, self._headers())

    def _read(self, response) -> str:
        body = response.read().decode("utf-8", "replace")
        try:
            return json.loads(body)["choices"][0]["message"]["content"] or ""
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"{self.url}/v1/chat/completions sent an answer without choices[0].message.content: "
                f"{_short(body)!r}. Is this an OpenAI-compatible server?", setting="backend",
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


# --------------------------------------------------------------------------- a local (weak) judge


def make_yes_no_prompt(entry: dict, json_key: str = "model_response") -> str:
    """Return a yes/no question for a small judge: is `entry[json_key]` a correct answer, given `entry["output"]`?"""
    task = entry["instruction"] + (f"\n{entry['input']}" if entry.get("input") else "")
    return (
        "Here is a task, a correct answer and a student's answer.\n\n"
        f"Task: {task}\n\nCorrect answer: {entry['output']}\n\nStudent's answer: {entry[json_key]}\n\n"
        "Is the student's answer correct? Answer with Yes or No."
    )


class LocalJudge:
    """A small instruction-tuned model on this computer as the judge: no server, no network -- a WEAK judge.

    Small models rarely answer "give a score from 0 to 100" with a usable number, so
    this judge asks a yes/no question (`make_yes_no_prompt`) and reads the model's
    next-token probabilities instead of sampling: score = 100 * P(Yes) / (P(Yes) + P(No)),
    where P(Yes) adds up the tokens "Yes", " Yes", "yes", " yes" (the same for No).
    Deterministic, always a number, one forward pass per entry. A 135M-parameter model
    is far weaker than the book's 8B judge: check it on answers you know are right and
    wrong before reading anything into its scores.
    """

    weak = True

    def __init__(self, weights: str = "smollm2-135m-instruct", models_root: str | os.PathLike | None = None,
                 device: str = "cpu", seed: int = 123, base=None):
        self.weights, self.models_root, self.device, self.seed = str(weights), models_root, device, seed
        self.base = base  # a buildllm.pretrained.BaseModel already loaded, or None to load `weights` on preflight
        self._yes_no: tuple[list[int], list[int]] | None = None

    @property
    def description(self) -> str:
        """One line for people."""
        return f"{self.weights} on this computer (a weak judge: yes/no probability, not a 0-100 grade)"

    def preflight(self, timeout: float | None = None) -> None:
        """Load the model (once); raise JudgeUnavailableError if it cannot be loaded or was never instruction-tuned."""
        from .pretrained import load_base_model
        from .sources import WeightsError

        if self.base is None:
            try:
                self.base = load_base_model(self.weights, models_root=self.models_root, device=self.device)
            except WeightsError as exc:
                raise JudgeUnavailableError(f"The local judge {self.weights!r} cannot be loaded: {exc}",
                                            setting="model") from None
        if self.base.chat_format is None:
            raise JudgeUnavailableError(
                f"{self.base.description} was never instruction-tuned, so it cannot answer a question; use an "
                f"instruction-tuned model (smollm2-135m-instruct) as the local judge.", setting="model")
        self.base.model.eval()
        tokenizer = self.base.tokenizer
        yes = {tokenizer.encode(word)[0] for word in ("Yes", " Yes", "yes", " yes")}
        no = {tokenizer.encode(word)[0] for word in ("No", " No", "no", " no")}
        self._yes_no = (sorted(yes), sorted(no))

    def make_prompt(self, entry: dict, json_key: str = "model_response") -> str:
        """The question this judge is asked about one entry (see `make_yes_no_prompt`)."""
        return make_yes_no_prompt(entry, json_key)

    def probability_yes(self, question: str) -> float:
        """P(Yes) / (P(Yes) + P(No)) for the first token of the model's answer to `question`."""
        import torch

        if self._yes_no is None:
            self.preflight()
        text, _ = self.base.chat_prompt([(question, None)])
        ids = self.base.tokenizer.encode(text, allowed_special="all")
        context = self.base.model.cfg["context_length"]
        if len(ids) > context:
            raise JudgeError(f"The question has {len(ids)} tokens, more than the judge's context of {context}; "
                             f"the entry is too long for this judge.")
        device = next(self.base.model.parameters()).device
        with torch.no_grad():
            logits = self.base.model(torch.tensor([ids], device=device))[0, -1]  # (vocab_size,)
        probs = torch.softmax(logits.float(), dim=-1)
        yes, no = (float(probs[ids_].sum()) for ids_ in self._yes_no)
        return yes / (yes + no) if yes + no > 0 else 0.5

    def chat(self, prompt: str, seed: int | None = None) -> str:
        """Answer `prompt` (a yes/no question) with the score as text, e.g. "73" (what `parse_score` reads)."""
        return str(int(100 * self.probability_yes(prompt) + 0.5))


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
    done: Mapping[int, ItemScore] | None = None,
) -> ScoreReport:
    """Ask `judge` to grade each entry's `json_key` (up to 1 + `retries` tries each) and return a ScoreReport.

    Entries whose index is in `done` (scores from an earlier, interrupted run) are
    not asked again; their items go into the report as they are. `on_item(item, entry)`
    is called after each new score, e.g. to save it at once. A judge may bring its own
    question (a ``make_prompt(entry, json_key)`` method); otherwise it gets
    `make_scoring_prompt`.
    """
    from tqdm import tqdm

    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}.")
    validate_entries(list(entries), required=("instruction", "output", json_key))
    done = dict(done or {})
    make_prompt = getattr(judge, "make_prompt", None) or make_scoring_prompt
    items = []
    todo = [(i, e) for i, e in enumerate(entries) if i not in done]
    for index, entry in tqdm(todo, desc="Scoring entries", disable=not progress, initial=len(entries) - len(todo),
                             total=len(entries)):
        prompt = make_prompt(entry, json_key)
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
    items += [item for index, item in done.items() if index < len(entries)]
    return ScoreReport(sorted(items, key=lambda item: item.index))


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
