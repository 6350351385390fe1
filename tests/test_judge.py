"""Chapter 7 evaluation: the judge clients against loopback fake servers, score parsing, offline metrics."""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from buildllm.judge import (
    JudgeConnectionError,
    JudgeError,
    JudgeTimeoutError,
    JudgeUnavailableError,
    LocalJudge,
    OllamaJudge,
    OpenAIJudge,
    exact_match,
    format_metrics,
    lcs_length,
    make_judge,
    make_scoring_prompt,
    make_yes_no_prompt,
    normalize_tokens,
    offline_metrics,
    parse_score,
    rouge_l,
    score_entries,
    token_f1,
)


class FakeJudgeServer:
    """A loopback HTTP server speaking Ollama's /api/tags and /api/chat and OpenAI's /v1 wire formats.

    `answers` are returned in order (the last one repeats). Modes: "ok"; "not_ollama" (an unrelated
    web server on the port); "slow" (answers only after `delay` s); "stall" (streams a first piece,
    then stops for `delay` s); "garbage_wire" (chat body is not JSON). Faults on the chat endpoint,
    for the first `faults` requests (None: all of them): "reset" (the connection is reset after the
    request was read); "cut_stream" (one streamed piece, then the connection closes); "drip_headers",
    "drip_body" (the answer, one byte every `delay` s: each read is quick, the whole answer is not);
    "drip_stream" (a streamed piece every `delay` s, never "done"); "garbage" (an HTML page). Faults
    start after `fault_after` good answers. `answer_for(request body)`, if given, picks each answer.
    """

    FAULTS = ("reset", "cut_stream", "drip_headers", "drip_body", "drip_stream", "garbage")

    def __init__(self, answers=("85",), models=("llama3:latest",), mode="ok", delay=3.0, faults=None,
                 fault_after=0, answer_for=None):
        self.answers, self.models, self.mode, self.delay = list(answers), list(models), mode, delay
        self.faults, self.fault_after, self.answer_for = faults, fault_after, answer_for
        self.requests: list[dict] = []
        self.faulted = 0
        self.stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status, body, content_type="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if fake.mode == "not_ollama":
                    return self._send(404, "<html><body>Not Found</body></html>", "text/html")
                if self.path == "/api/tags":
                    return self._send(200, {"models": [{"name": m, "model": m} for m in fake.models]})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": m, "object": "model"}
                                                                        for m in fake.models]})
                return self._send(200, "Ollama is running", "text/plain")

            def _fault(self, body, answer):
                """Misbehave as `fake.mode` says; the client may hang up at any point."""
                try:
                    if fake.mode == "reset":  # RST instead of an answer
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                        return
                    if fake.mode == "garbage":
                        return self._send(200, "<html><body>Welcome to nginx!</body></html>", "text/html")
                    if fake.mode in ("cut_stream", "drip_stream"):
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n")
                        chunk = {"model": body["model"], "message": {"role": "assistant", "content": "1"},
                                 "done": False}
                        while True:
                            self.wfile.write((json.dumps(chunk) + "\n").encode())
                            self.wfile.flush()
                            if fake.mode == "cut_stream" or fake.stop.wait(fake.delay):
                                self.close_connection = True
                                return
                    data = json.dumps({"model": body["model"], "done": True,
                                       "message": {"role": "assistant", "content": answer}}).encode()
                    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n").encode()
                    dripped = head if fake.mode == "drip_headers" else head + data
                    if fake.mode == "drip_body":
                        self.wfile.write(head)
                        dripped = data
                    for i in range(len(dripped)):
                        self.wfile.write(dripped[i:i + 1])
                        self.wfile.flush()
                        if fake.stop.wait(fake.delay):
                            return
                    if fake.mode == "drip_headers":
                        self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (deadline): that is the point

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, **body})
                answer = fake.answers[min(len(fake.requests) - 1, len(fake.answers) - 1)]
                if fake.answer_for is not None:
                    answer = fake.answer_for(body)
                if (fake.mode in fake.FAULTS and len(fake.requests) > fake.fault_after
                        and (fake.faults is None or fake.faulted < fake.faults)):
                    fake.faulted += 1
                    return self._fault(body, answer)
                if fake.mode == "slow":
                    fake.stop.wait(fake.delay)
                if self.path == "/v1/chat/completions":
                    return self._send(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": answer}}]})
                if self.path != "/api/chat":
                    return self._send(404, "404 page not found", "text/plain")
                name = body["model"] if ":" in body["model"] else body["model"] + ":latest"
                if name not in fake.models:
                    return self._send(404, {"error": f'model "{body["model"]}" not found, try pulling it first'})
                if fake.mode == "garbage_wire":
                    return self._send(200, "<html>surprise</html>\n", "text/html")
                if not body.get("stream", True):
                    return self._send(200, {"model": body["model"], "done": True,
                                            "message": {"role": "assistant", "content": answer}})
                # Ollama's default: newline-delimited JSON, pieces of the answer, then a final "done" object.
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                pieces = [answer[i:i + 2] for i in range(0, len(answer), 2)] or [""]
                for i, piece in enumerate(pieces):
                    chunk = {"model": body["model"], "message": {"role": "assistant", "content": piece},
                             "done": False}
                    self.wfile.write((json.dumps(chunk) + "\n").encode())
                    self.wfile.flush()
                    if fake.mode == "stall" and i == 0:
                        fake.stop.wait(fake.delay)
                final = {"model": body["model"], "message": {"role": "assistant", "content": ""},
                         "done": True, "done_reason": "stop"}
                self.wfile.write((json.dumps(final) + "\n").encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()  # release handlers that wait ("slow", "stall")
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def free_port_url() -> str:
    """The URL of a loopback port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


ENTRY = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
         "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a cheetah."}


# --------------------------------------------------------------------------- Ollama wire format


def test_ollama_streamed_answer_is_joined_and_request_has_options():
    with FakeJudgeServer(answers=["  87\n"]) as server:
        judge = OllamaJudge("llama3", server.url, timeout=5)
        judge.preflight()
        assert judge.chat("Score this.") == "  87\n"
    request = server.requests[0]
    assert request["path"] == "/api/chat" and request["model"] == "llama3" and request["stream"] is True
    assert request["messages"] == [{"role": "user", "content": "Score this."}]
    assert request["options"] == {"seed": 123, "temperature": 0.0, "num_ctx": 2048}


def test_ollama_non_streamed_answer():
    with FakeJudgeServer(answers=["42"]) as server:
        judge = OllamaJudge("llama3", server.url + "/", stream=False, timeout=5)  # trailing slash is fine
        assert judge.chat("x") == "42"
    assert server.requests[0]["stream"] is False


def test_preflight_server_down_says_start_ollama_serve():
    judge = OllamaJudge("llama3", free_port_url(), timeout=2)
    with pytest.raises(JudgeUnavailableError, match="ollama serve"):
        judge.preflight()
    with pytest.raises(JudgeUnavailableError, match="connection refused"):
        judge.chat("x")


def test_preflight_model_not_pulled_says_ollama_pull():
    with FakeJudgeServer(models=["phi3:latest"]) as server:
        judge = OllamaJudge("llama3", server.url, timeout=5)
        with pytest.raises(JudgeUnavailableError, match=r"ollama pull llama3") as info:
            judge.preflight()
        assert "phi3:latest" in str(info.value)
        with pytest.raises(JudgeUnavailableError, match="ollama pull llama3"):  # the chat endpoint says so too
            judge.chat("x")


def test_preflight_accepts_explicit_tag_and_latest():
    with FakeJudgeServer(models=["llama3:latest", "llama3.1:8b"]) as server:
        OllamaJudge("llama3", server.url).preflight()
        OllamaJudge("llama3:latest", server.url).preflight()
        OllamaJudge("llama3.1:8b", server.url).preflight()
        with pytest.raises(JudgeUnavailableError, match="ollama pull llama3.1"):
            OllamaJudge("llama3.1", server.url).preflight()  # means llama3.1:latest, which is not pulled


def test_preflight_port_used_by_another_program():
    with FakeJudgeServer(mode="not_ollama") as server:
        with pytest.raises(JudgeUnavailableError, match="it is not Ollama") as info:
            OllamaJudge("llama3", server.url, timeout=5).preflight()
    assert "HTTP 404" in str(info.value) and info.value.setting == "url"


def test_slow_server_times_out_with_clear_error():
    with FakeJudgeServer(mode="slow", delay=5) as server:
        judge = OllamaJudge("llama3", server.url, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(JudgeTimeoutError, match="did not finish its answer within 0.3 s") as info:
            judge.chat("x")
        assert time.monotonic() - start < 3 and info.value.setting == "timeout"


def test_stalled_stream_times_out():
    with FakeJudgeServer(answers=["8 5"], mode="stall", delay=5) as server:
        with pytest.raises(JudgeTimeoutError, match="within 0.3 s"):
            OllamaJudge("llama3", server.url, timeout=0.3).chat("x")


# --------------------------------------------------------------------------- faults: nothing hangs, breaks retried


def test_reset_connections_are_retried_with_backoff():
    with FakeJudgeServer(answers=["70"], mode="reset", faults=2) as server:
        judge = OllamaJudge("llama3", server.url, timeout=5, backoff=0.05)
        start = time.monotonic()
        assert judge.chat("x") == "70"
    assert len(server.requests) == 3  # two resets, then the answer
    assert time.monotonic() - start >= 0.05 + 0.1  # paused 1x, then 2x the base before retrying


def test_a_server_that_keeps_resetting_is_a_clear_error():
    with FakeJudgeServer(mode="reset") as server:
        judge = OllamaJudge("llama3", server.url, timeout=5, connection_retries=2, backoff=0.01)
        with pytest.raises(JudgeConnectionError, match=r"broke off .*Gave up after 3 attempt\(s\)"):
            judge.chat("x")
    assert len(server.requests) == 3


def test_a_stream_cut_short_is_retried():
    with FakeJudgeServer(answers=["64"], mode="cut_stream", faults=1) as server:
        assert OllamaJudge("llama3", server.url, timeout=5, backoff=0.01).chat("x") == "64"
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode, stream", [("drip_headers", False), ("drip_body", False), ("drip_stream", True)])
def test_a_server_sending_bytes_slowly_hits_the_total_deadline(mode, stream):
    """Each byte comes within the socket timeout, so only a total deadline ends the request."""
    with FakeJudgeServer(mode=mode, delay=0.05) as server:
        judge = OllamaJudge("llama3", server.url, timeout=0.5, stream=stream)
        start = time.monotonic()
        with pytest.raises(JudgeTimeoutError, match="did not finish its answer within 0.5 s"):
            judge.chat("x")
        assert time.monotonic() - start < 2.0
    assert len(server.requests) == 1  # a timeout is not retried


def test_openai_backend_retries_and_deadline():
    with FakeJudgeServer(answers=["55"], models=["m"], mode="reset", faults=1) as server:
        assert OpenAIJudge("m", server.url, timeout=5, backoff=0.01).chat("x") == "55"
    assert len(server.requests) == 2
    with FakeJudgeServer(models=["m"], mode="slow", delay=5) as server, \
            pytest.raises(JudgeTimeoutError, match="within 0.3 s"):
        OpenAIJudge("m", server.url, timeout=0.3).chat("x")


def test_library_messages_name_no_command_line_flag():
    """The scripts add their flags (see ch07/ollama_evaluate.py); the library speaks of settings."""
    import buildllm.judge as judge_module

    source = Path(judge_module.__file__).read_text(encoding="utf-8")
    assert re.findall(r"--[a-z][a-z-]+", source) == []


def test_non_json_wire_format_is_a_clear_error():
    with FakeJudgeServer(mode="garbage_wire") as server:
        with pytest.raises(JudgeError, match="not Ollama's JSON"):
            OllamaJudge("llama3", server.url, timeout=5).chat("x")


def test_url_without_scheme_is_rejected():
    with pytest.raises(ValueError, match="needs a scheme"):
        OllamaJudge("llama3", "localhost:11434")


# --------------------------------------------------------------------------- OpenAI-compatible backend


def test_openai_backend_against_loopback_server():
    with FakeJudgeServer(answers=["73"], models=["my-judge"]) as server:
        judge = make_judge("openai", model="my-judge", url=server.url + "/v1", api_key="k", timeout=5)
        assert isinstance(judge, OpenAIJudge) and judge.url == server.url
        judge.preflight()
        assert judge.chat("Score this.") == "73"
        with pytest.raises(JudgeUnavailableError, match="does not offer the model 'other'"):
            OpenAIJudge("other", server.url).preflight()
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["temperature"] == 0.0 and request["seed"] == 123 and request["model"] == "my-judge"


def test_openai_backend_down_and_wrong_server():
    with pytest.raises(JudgeUnavailableError, match="connection refused"):
        OpenAIJudge("m", free_port_url(), timeout=2).preflight()
    with FakeJudgeServer(mode="not_ollama") as server:
        with pytest.raises(JudgeUnavailableError, match="not as an OpenAI-compatible server"):
            OpenAIJudge("m", server.url, timeout=5).preflight()


def test_make_judge_rejects_unknown_backend():
    with pytest.raises(ValueError, match="Unknown judge backend 'claude'"):
        make_judge("claude")


# --------------------------------------------------------------------------- parsing and scoring


@pytest.mark.parametrize("answer, expected", [
    ("85", (85, "ok")),
    (" 85.\n", (85, "ok")),
    ("0", (0, "ok")),
    ("100", (100, "ok")),
    ("Score: 92", (92, "ok")),
    ("85/100", (85, "ok")),
    ("I give it 7 out of 100.", (7, "ok")),
    ("72.5", (73, "ok")),
    ("150", (None, "out_of_range")),
    ("-3", (None, "out_of_range")),
    ("excellent", (None, "not_a_number")),
    ("", (None, "not_a_number")),
    ("Between 60 and 70", (None, "not_a_number")),
])
def test_parse_score(answer, expected):
    assert parse_score(answer) == expected


def test_scoring_prompt_holds_task_reference_and_response():
    prompt = make_scoring_prompt(ENTRY)
    assert "### Instruction:\nRewrite the sentence using a simile." in prompt
    assert "The car is as fast as lightning." in prompt and "The car is as fast as a cheetah." in prompt
    assert prompt.endswith("Respond with the integer number only.")


def test_score_entries_retries_and_counts_invalid_answers():
    entries = [ENTRY, {**ENTRY, "model_response": "no idea"}, {**ENTRY, "model_response": "x"}]
    # entry 0: "great" (not a number), then 90; entry 1: 150 (out of range), 120, then 40;
    # entry 2: three unusable answers, so it stays unscored.
    answers = ["great", "90", "150", "120", "40", "n/a", "-5", "very good"]
    with FakeJudgeServer(answers=answers) as server:
        judge = OllamaJudge("llama3", server.url, timeout=5)
        seen = []
        report = score_entries(judge, entries, retries=2, progress=False, on_item=lambda item, e: seen.append(item))
    assert [item.score for item in report.items] == [90, 40, None]
    assert [item.status for item in report.items] == ["ok", "ok", "not_a_number"]
    assert report.scores == [90, 40] and report.average == 65.0 and report.num_unscored == 1
    assert report.invalid_answers == {"not_a_number": 3, "out_of_range": 3}
    assert report.num_retries == 5 and len(server.requests) == 8 and len(seen) == 3
    # retries carry a firmer reminder and another seed
    assert server.requests[1]["messages"][0]["content"].endswith("and nothing else.")
    assert [r["options"]["seed"] for r in server.requests[:2]] == [123, 124]
    assert "Average judge score: 65.00 over 2 of 3 entries" in report.summary()
    assert "3 not a number, 3 out of range" in report.summary()


def test_score_entries_needs_the_response_key():
    with pytest.raises(ValueError, match="Entry 0 has no 'model_response' field"):
        score_entries(OllamaJudge(), [{"instruction": "a", "input": "", "output": "b"}], progress=False)


def test_score_entries_stops_when_the_judge_goes_away():
    with pytest.raises(JudgeUnavailableError, match="ollama serve"):
        score_entries(OllamaJudge("llama3", free_port_url(), timeout=2), [ENTRY], progress=False)


def test_score_entries_skips_entries_already_scored():
    from buildllm.judge import ItemScore

    entries = [ENTRY, {**ENTRY, "model_response": "b"}, {**ENTRY, "model_response": "c"}]
    earlier = {0: ItemScore(0, 90, "ok", ["90"]), 2: ItemScore(2, None, "not_a_number", ["?", "?", "?"])}
    with FakeJudgeServer(answers=["40"]) as server:
        seen = []
        report = score_entries(OllamaJudge("llama3", server.url, timeout=5), entries, progress=False,
                               done=earlier, on_item=lambda item, e: seen.append(item.index))
    assert len(server.requests) == 1 and seen == [1]
    assert [(i.index, i.score) for i in report.items] == [(0, 90), (1, 40), (2, None)]


# --------------------------------------------------------------------------- the local (weak) judge


class YesNoModel(torch.nn.Module):
    """A stand-in model whose next token is "Yes" when the prompt holds `marker`, else "No"."""

    def __init__(self, tokenizer, marker="lightning."):
        super().__init__()
        self.cfg = {"context_length": 1024}
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.marker = tokenizer, marker
        self.yes, self.no = tokenizer.encode(" Yes")[0], tokenizer.encode(" No")[0]

    def forward(self, idx, kv_cache=None):
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.tokenizer.n_vocab)
        text = self.tokenizer.decode(idx[0].tolist())
        favoured = self.yes if f"Student's answer: {self.marker}" in text else self.no
        logits[..., favoured] = 3.0  # e^3 / (e^3 + 1): about 95% of the yes/no mass
        return logits


def local_judge(model=None, meta=None):
    from buildllm.pretrained import BaseModel
    from buildllm.tokenizer import get_gpt2_tokenizer

    tokenizer = get_gpt2_tokenizer()
    base = BaseModel(model or YesNoModel(tokenizer, "The car is as fast as lightning."), tokenizer, "stand-in",
                     "a stand-in model", meta or {"tokenizer": "gpt2", "prompt_style": "alpaca"})
    return LocalJudge("stand-in", base=base)


def test_local_judge_scores_from_yes_no_probabilities():
    judge = local_judge()
    judge.preflight()
    right = {**ENTRY, "model_response": "The car is as fast as lightning."}
    report = score_entries(judge, [right, ENTRY], progress=False)
    # Four distinct Yes tokens and four No tokens in GPT-2's vocabulary; one of them gets logit 3, the rest 0:
    # P(Yes) / (P(Yes) + P(No)) = (e^3 + 3) / (e^3 + 3 + 4) = 0.852 -> 85 for the right answer, 15 for the other.
    share = (math.exp(3) + 3) / (math.exp(3) + 7)
    assert [item.score for item in report.items] == [round(100 * share), round(100 * (1 - share))] == [85, 15]
    assert report.num_retries == 0 and judge.weak and "weak judge" in judge.description
    assert make_yes_no_prompt(ENTRY).endswith("Answer with Yes or No.")


def test_local_judge_refuses_a_model_that_cannot_answer():
    judge = local_judge(meta={"tokenizer": "gpt2"})  # never instruction-tuned
    with pytest.raises(JudgeUnavailableError, match="never instruction-tuned"):
        judge.preflight()
    with pytest.raises(JudgeUnavailableError, match="cannot be loaded") as info:
        LocalJudge("/no/such/model.pth").preflight()
    assert info.value.setting == "model"


# --------------------------------------------------------------------------- offline metrics


def test_normalize_tokens():
    assert normalize_tokens("The car, is FAST!") == ["the", "car", "is", "fast"]


def test_exact_match_ignores_case_punctuation_and_spacing():
    assert exact_match("The car is fast.", "the car  is fast") == 1.0
    assert exact_match("The car is fast.", "The car is slow.") == 0.0


def test_token_f1_exact():
    # prediction tokens: the cat sat (3), reference: the cat sat on the mat (6); overlap 3
    # precision 1, recall 1/2 -> F1 = 2/3
    assert token_f1("The cat sat.", "The cat sat on the mat.") == pytest.approx(2 / 3)
    assert token_f1("the the", "the") == pytest.approx(2 / 3)  # bag overlap counts "the" once
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 0.0 and token_f1("dog", "cat") == 0.0


def test_lcs_and_rouge_l_exact():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example (e.g. BCBA)
    assert lcs_length([], [1, 2]) == 0
    # pred: police killed the gunman (4); ref: the gunman was killed by police (6)
    # LCS = "the gunman" or "police killed"? -> 2; P = 2/4, R = 2/6, F = 2PR/(P+R) = 0.4
    assert rouge_l("police killed the gunman", "the gunman was killed by police") == pytest.approx(0.4)
    assert rouge_l("a b c d", "a b c d") == 1.0
    assert rouge_l("", "") == 1.0 and rouge_l("x", "y") == 0.0


def test_offline_metrics_average_and_format():
    entries = [
        {"instruction": "i", "input": "", "output": "The cat sat on the mat.", "model_response": "The cat sat."},
        {"instruction": "i", "input": "", "output": "Yes.", "model_response": "yes"},
    ]
    metrics = offline_metrics(entries)
    assert metrics["n"] == 2
    assert metrics["exact_match"] == 0.5
    assert metrics["token_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["rouge_l"] == pytest.approx((2 / 3 + 1) / 2)
    assert format_metrics(metrics) == (
        "Offline metrics on 2 responses: exact match 50.00%, token F1 83.33%, ROUGE-L 83.33%")


def test_offline_metrics_names_a_bad_entry():
    with pytest.raises(ValueError, match="Entry 1 has no 'model_response' field"):
        offline_metrics([ENTRY, {"instruction": "i", "input": "", "output": "o"}])
