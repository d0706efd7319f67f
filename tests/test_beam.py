"""Beam search for the GPT, and text metrics as translators report them: sacreBLEU's BLEU and chrF with
their signatures in ``metrics.json``, greedy or beam decoding in train, eval and sample."""

import json

import pytest
import sacrebleu
import torch
from hydra.utils import instantiate

from genlab.errors import ConfigError
from genlab.models.lm import LanguageModel
from genlab.models.sacrebleu_metrics import SacreMetric, sacre_bleu, sacre_chrf
from genlab.nets.gpt import GPT
from genlab.pipeline import load_run, train
from tests.conftest import TINY_GPT, compose_train, run_script
from tests.datasets import copy_task

VOCAB, STOP = 50, 3
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny networks: one thread is as fast, and robust to a busy machine


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_gpt(seed: int = 0, block_size: int = 32) -> GPT:
    """A random GPT of TINY_GPT's size (2 layers, 2 heads, 32 dims), as initialised: seeded."""
    torch.manual_seed(seed)
    return GPT(VOCAB, block_size=block_size, n_layer=2, n_head=2, n_embd=32, dropout=0.0).eval()


def prompts(n: int, length: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def up_to_stop(tokens: list[int]) -> list[int]:
    """The generated tokens up to and including the first stop token."""
    return tokens[: tokens.index(STOP) + 1] if STOP in tokens else tokens


@torch.no_grad()
def log_prob(net: GPT, prompt: list[int], output: list[int]) -> float:
    """sum log p(output | prompt), re-scored with one forward pass of the network."""
    logits, _ = net(torch.tensor([prompt + output]))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(logp[len(prompt) - 1 + i, token].item() for i, token in enumerate(output))


def reference_beam_search(
    net: GPT, prompt: list[int], steps: int, k: int, length_penalty: float
) -> list[int]:
    """Beam search written plainly (one sequence at a time, no cache): what GPT.beam_search must return."""
    beams, finished = [(0.0, [])], []
    for step in range(steps):
        candidates = []
        for score, seq in beams:
            logits, _ = net(torch.tensor([prompt + seq]))
            logp = torch.log_softmax(logits[0, -1].float(), dim=-1).tolist()
            candidates += [(score + logp[t], seq + [t]) for t in range(VOCAB)]
        candidates = sorted(candidates, key=lambda c: -c[0])[: 2 * k]
        for score, seq in candidates[:k]:  # ending among the best k: finished, score / length**penalty
            if seq[-1] == STOP and len(finished) < k:
                finished.append((score / len(seq) ** length_penalty, seq))
        if len(finished) >= k:
            break
        beams = [c for c in candidates if c[1][-1] != STOP][:k]
        if step == steps - 1:
            finished += [(score / len(seq) ** length_penalty, seq) for score, seq in beams]
    return max(finished, key=lambda f: f[0])[1]


def test_beam_size_one_is_greedy_decoding_token_for_token():
    for seed in range(3):
        net, batch = tiny_gpt(seed), prompts(6, seed=seed)
        greedy = net.generate(batch, 20, temperature=0, stop_token=STOP)[:, 5:]
        beam = net.beam_search(batch, 20, beam_size=1, stop_token=STOP)[:, 5:]
        for g, b in zip(greedy.tolist(), beam.tolist()):
            assert up_to_stop(b) == up_to_stop(g)
    # past block_size (the window slides, the cache is rebuilt) and without a stop token: every token
    net, batch = tiny_gpt(block_size=16), prompts(3, length=12)
    greedy = net.generate(batch, 24, temperature=0)
    assert torch.equal(net.beam_search(batch, 24, beam_size=1), greedy)


def test_beam_search_equals_a_plain_implementation_and_batches_prompts_independently():
    net, batch = tiny_gpt(1), prompts(4, seed=1)
    for length_penalty in (0.0, 1.0):
        beams = net.beam_search(batch, 7, beam_size=3, length_penalty=length_penalty, stop_token=STOP)
        for prompt, row in zip(batch.tolist(), beams[:, 5:].tolist()):
            expected = reference_beam_search(net, prompt, 7, 3, length_penalty)
            assert up_to_stop(row) == expected
            alone = net.beam_search(torch.tensor([prompt]), 7, 3, length_penalty, stop_token=STOP)
            assert up_to_stop(alone[0, 5:].tolist()) == expected


def test_beam_four_scores_every_output_at_least_as_high_as_greedy():
    """length_penalty=0 ranks by the plain sum of log-probabilities, the quantity compared. (Beam search
    does not guarantee this: a search can drop the greedy prefix. On nets with larger random weights a
    few % of prompts end below greedy; on these seeded tiny GPTs none does.)"""
    for seed in range(3):
        net, batch = tiny_gpt(seed), prompts(8, seed=seed)
        greedy = net.generate(batch, 16, temperature=0, stop_token=STOP)[:, 5:].tolist()
        beam = net.beam_search(batch, 16, beam_size=4, length_penalty=0.0, stop_token=STOP)[:, 5:].tolist()
        for prompt, g, b in zip(batch.tolist(), greedy, beam):
            assert log_prob(net, prompt, up_to_stop(b)) >= log_prob(net, prompt, up_to_stop(g)) - 1e-5


def test_sacre_metrics_equal_sacrebleu_and_reduce_as_ranks_would():
    hypotheses = ["A man is riding a bike down the street .", "Two dogs play in the snow", "a b c d", "x y"]
    references = [
        "A man rides a bicycle down the street.",
        "Two dogs are playing in the snow.",
        "a b c e",
        "x y z",
    ]
    for make, score in ((sacre_bleu, sacrebleu.corpus_bleu), (sacre_chrf, sacrebleu.corpus_chrf)):
        whole, rank0, rank1 = make(), make(), make()
        whole.update(hypotheses, references)
        rank0.update(hypotheses[::2], references[::2])
        rank1.update(hypotheses[1::2], references[1::2])
        rank0.merge_state(rank1)  # what DDP's sum reduction does with the ranks' states
        expected = score(hypotheses, [references]).score
        assert whole.compute().item() == pytest.approx(expected, abs=1e-9) and expected > 0
        assert rank0.compute().item() == pytest.approx(expected, abs=1e-9)
    # exp smoothing: sacreBLEU scores a corpus without any 4-gram match above 0 (torchmetrics' smooth=False: 0)
    short = sacre_bleu()
    short.update(hypotheses[2:], references[2:])
    assert short.compute().item() == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses[2:], [references[2:]]).score
    )
    assert short.compute().item() > 0


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory) -> dict:
    """A tiny GPT trained for 2 epochs on the toy copy corpus (as tests/test_entry_points.py), with BLEU of
    all 41 val pairs; the (hypotheses, references) scored at each evaluation are recorded."""
    root = tmp_path_factory.mktemp("beam")
    overrides = [
        "model=gpt",
        *TINY_GPT,
        "trainer=cpu",
        "callbacks.progress_bar=null",
        "callbacks.text_samples=null",
        *copy_task(root / "corpus"),
        "model.bleu_samples=-1",
        "model.bleu_max_new_tokens=12",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.check_val_every_n_epoch=2",  # one validation: BLEU of the trained model
    ]
    scored: list[tuple[list[str], list[str]]] = []
    update = SacreMetric.update

    def recording_update(self, hypotheses, references):
        scored.append((list(hypotheses), list(references)))
        update(self, hypotheses, references)

    SacreMetric.update = recording_update
    try:
        train(compose_train(overrides, root / "run"))
    finally:
        SacreMetric.update = update
    return {"run": root / "run", "scored": scored}


@pytest.mark.slow
def test_metrics_json_has_signatures_and_chrf_equal_to_sacrebleu(translation_run):
    run = translation_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    hypotheses, references = translation_run["scored"][-1]  # the last validation: the one in metrics.json
    assert translation_run["scored"][-2] == (hypotheses, references), "BLEU and chrF score the same outputs"
    assert len(hypotheses) == 41 and any(h == r for h, r in zip(hypotheses, references))
    bleu = sacrebleu.metrics.BLEU()
    assert metrics["val/bleu"] == pytest.approx(bleu.corpus_score(hypotheses, [references]).score, abs=1e-6)
    chrf = sacrebleu.metrics.CHRF()
    assert metrics["val/chrf"] == pytest.approx(chrf.corpus_score(hypotheses, [references]).score, abs=1e-6)
    assert metrics["val/bleu"] > 5, (
        "the copy task is learnt: a BLEU far from 0 makes the comparison meaningful"
    )
    protocol = metrics["protocol"]
    assert protocol["bleu"]["signature"] == str(bleu.get_signature())
    assert protocol["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert protocol["chrf"]["signature"] == str(chrf.get_signature())
    assert "nc:6|nw:0" in protocol["chrf"]["signature"]
    for entry in protocol.values():
        assert (entry["split"], entry["sentences"], entry["decoding"]) == ("val", 41, "greedy")


@pytest.mark.slow
def test_decodes_scored_are_those_of_the_model(translation_run):
    """The recorded hypotheses are the model's greedy decodes of the val prompts, cut at <eos>."""
    _, checkpoint, cfg = load_run(str(translation_run["run"]))
    dm = instantiate(cfg.data, _convert_="all")
    dm.tokenizer = type(dm).tokenizer_from_checkpoint(checkpoint)
    model = instantiate(cfg.model, _convert_="all").eval()
    model.load_state_dict(checkpoint["state_dict"])
    pairs = dm.bleu_pairs(5, "val")
    outputs = model.translate([p for p, _ in pairs], dm.eos_id)
    hypotheses, references = translation_run["scored"][-1]
    assert [dm.tokenizer.decode(o) for o in outputs] == hypotheses[:5]
    assert [r for _, r in pairs] == references[:5]
    assert model.protocol() == {}, "no BLEU computed yet: no protocol"


@pytest.mark.slow
def test_eval_with_beam_overrides_reports_beam_decoding(translation_run, tmp_path):
    out = tmp_path / "eval"
    args = [f"ckpt_path={translation_run['run']}", "+overrides.model.beam_size=2", f"hydra.run.dir={out}"]
    run_script("eval.py", args, tmp_path, env=ONE_THREAD)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val/bleu"] <= 100 and 0 <= metrics["val/chrf"] <= 100
    for name in ("bleu", "chrf"):
        assert metrics["protocol"][name]["decoding"] == "beam 2, length_penalty 1.0"
        assert metrics["protocol"][name]["sentences"] == 41


@pytest.mark.slow
def test_sample_script_decodes_with_beam_search(translation_run, tmp_path):
    out = tmp_path / "sample"
    args = [f"ckpt_path={translation_run['run']}", "beam_size=3", "max_new_tokens=8", f"hydra.run.dir={out}"]
    args += ["prompt='red dog'"]
    run_script("sample.py", args, tmp_path, env=ONE_THREAD)
    texts = (out / "samples.txt").read_text().split("\n\n")
    # a run trained on pairs: the prompt is a source sentence, the one best beam its translation up to <eos>
    _, checkpoint, run_cfg = load_run(str(translation_run["run"]))
    model = instantiate(run_cfg.model, _convert_="all", beam_size=3, bleu_max_new_tokens=8)
    model.load_state_dict(checkpoint["state_dict"])
    dm = instantiate(run_cfg.data, _convert_="all")
    dm.tokenizer = dm.tokenizer_from_checkpoint(checkpoint)
    (expected,) = model.eval().translate([dm.prompt_ids("red dog")], dm.eos_id)
    assert texts == [dm.tokenizer.decode(expected).strip()]


def test_beam_size_below_one_is_refused():
    with pytest.raises(ConfigError, match="model.beam_size must be at least 1"):
        LanguageModel(tiny_gpt(), beam_size=0)
