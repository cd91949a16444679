"""`select --ifd`: the scores equal an independent transformers computation on the tiny model, --top keeps exactly
the top fraction, and a second run resumes from the scores file."""

import functools
import json
import math

import pytest

ROWS = [
    ("What is a tokenizer?", "A tokenizer splits text into ids."),
    ("How do I fine-tune a model?", "Use LoRA with a small learning rate."),
    ("什么是大语言模型？", "大语言模型是一种根据上下文预测下一个词的模型。"),
    ("请用一句话介绍你自己。", "我是一个有用的助手，可以回答问题。"),
    ("Translate 你好 into English.", "你好 means hello."),
    ("北京的天气怎么样？", "北京今天晴天，气温二十度。"),
    ("Give me a haiku.", "Quiet morning rain / the kettle hums a soft tune / tea leaves slowly sink"),
    ("The model reads the small dataset.", "My friend writes the quiet poem."),
    ("3 x 4 = ?", "3 x 4 = 12"),
    ("今天我在公园", "学习数学。"),
]


@functools.cache
def load(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def reference_ifd(model_dir, instruction, answer):
    """PPL(answer | chat-formatted instruction) / PPL(answer after the start token), one unpadded sequence at a time."""
    import torch

    tok, net = load(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                     add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def answer_loss(context):
        ids = torch.tensor([context + a_ids])
        with torch.no_grad():
            logp = torch.log_softmax(net(ids).logits[0].double(), dim=-1)
        n = len(context)
        return -sum(logp[n + j - 1, t].item() for j, t in enumerate(a_ids)) / len(a_ids)

    return math.exp(answer_loss(p_ids) - answer_loss([start]))


@pytest.fixture(scope="module")
def scored(tiny_model, tmp_path_factory):
    from llf_recipes.cli import main as cli_main

    root = tmp_path_factory.mktemp("ifd")
    src = root / "rows.jsonl"
    src.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False) + "\n"
                           for q, a in ROWS), encoding="utf-8")
    out = root / "top.jsonl"
    code = cli_main(["select", str(src), "-o", str(out), "--ifd", "--model", str(tiny_model), "--top", "0.3",
                     "--device", "cpu", "--batch-size", "3"])
    assert code == 0
    return src, out, root / "top.ifd.jsonl"


def test_scores_equal_an_independent_computation(scored, tiny_model):
    _, _, scores_path = scored
    records = [json.loads(line) for line in scores_path.read_text().splitlines()[1:]]
    assert [r["row"] for r in records] == list(range(1, len(ROWS) + 1))
    for (q, a), record in zip(ROWS, records):
        assert record["ifd"] == pytest.approx(reference_ifd(tiny_model, q, a), rel=1e-4)


def test_top_keeps_exactly_the_top_fraction_in_input_order(scored):
    src, out, scores_path = scored
    scores = [json.loads(line)["ifd"] for line in scores_path.read_text().splitlines()[1:]]
    assert len({round(s, 6) for s in scores}) == len(scores)  # distinct scores: the top three are well defined
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:3]  # 30% of 10
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [rows[i] for i in sorted(best)]


def test_a_second_run_resumes_from_the_scores(scored, tiny_model, cli):
    src, _, scores_path = scored
    lines = scores_path.read_text().splitlines()
    # keep four scores, the fourth set very high, and cut the fifth short as a stop would
    kept = [lines[0], *lines[1:4], json.dumps({**json.loads(lines[4]), "ifd": 1e9}), lines[5][:10]]
    scores_path.write_text("\n".join(kept) + "\n")
    out = scores_path.with_name("top.jsonl")
    code, stdout, _ = cli("select", src, "-o", out, "--ifd", "--model", tiny_model, "--top", "0.1", "--device", "cpu")
    assert code == 0 and "resuming after 4 scored row(s)" in stdout
    assert [json.loads(line)["instruction"] for line in out.read_text(encoding="utf-8").splitlines()] == [ROWS[3][0]]
    assert len(scores_path.read_text().splitlines()) == len(ROWS) + 1


def test_bad_select_input_is_refused(tmp_path, tiny_model, cli):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"text": "no instruction here"}\n')
    code, _, err = cli("select", src, "-o", tmp_path / "o.jsonl", "--ifd", "--model", tiny_model, "--top", "0.3")
    assert code != 0 and "rows.jsonl:1" in err and "--prompt" in err
    code, _, err = cli("select", src, "-o", tmp_path / "o.jsonl", "--ifd", "--model", tiny_model, "--top", "3")
    assert code != 0 and "--top" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_a_large_input_is_streamed_and_an_interrupted_run_resumes_without_rescoring(tmp_path, monkeypatch):
    """The scoring itself is replaced (the tests above check it): what is checked here is that the rows are read as a
    stream, batch by batch, and that rows scored before a stop are not scored again."""
    import tracemalloc

    import transformers

    from llf_recipes.eval import ifd, scoring

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    src = tmp_path / "rows.jsonl"
    n = 6000
    with src.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"问题 {i}", "response": "答" * (500 + (i * 7919) % 1000)}, ensure_ascii=False))
            fh.write("\n")
    scored, stop_after = [], [3]

    def fake_score(net, tokenizer, pairs, cutoff, batch_size):
        if len(scored) >= stop_after[0] * 64:
            raise KeyboardInterrupt
        scored.extend(q for q, _ in pairs)  # the short instructions only: the test holds them all
        return [{"ifd": len(a) / 1500, "loss_cond": 0.0, "loss_answer": 0.0, "tokens": len(a)} for _, a in pairs]

    monkeypatch.setattr(ifd, "score_batch", fake_score)
    monkeypatch.setattr(scoring, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    opts = ifd.IfdOptions(input=src, output=tmp_path / "top.jsonl", model=str(tmp_path / "model"), top=0.3,
                          batch_size=8, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        ifd.select(opts, say=lambda _: None)
    assert len(scored) == 3 * 64 and not opts.output.exists()
    stop_after[0] = 10**9
    said = []
    tracemalloc.start()
    kept, total = ifd.select(opts, say=said.append)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert said == [f"{opts.scores_path}: resuming after 192 scored row(s)"]
    assert len(scored) == n and total == n  # every row scored exactly once over the two runs
    assert scored == [f"问题 {i}" for i in range(n)]
    assert peak < src.stat().st_size / 8, (peak, src.stat().st_size)  # rows are not all held at once
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    best = sorted(range(n), key=lambda i: -len(rows[i]["response"]))[:kept]
    assert kept == round(0.3 * n)
    assert [json.loads(line) for line in opts.output.read_text(encoding="utf-8").splitlines()] == [rows[i] for i in sorted(best)]
