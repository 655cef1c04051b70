"""The flow as a user writes it (docs/pretrain-finetune.md): every python block of the page runs, in
order, and its asserts hold (Hebbian pre-training, save, load with timm, AdamW fine-tuning, LP-FT)."""

from test_docs_snippets import DOCS, code_blocks
from test_docs_snippets import test_page_snippets_run as run_page

PAGE = "pretrain-finetune.md"


def test_the_pretrain_then_finetune_page_runs_as_written(tmp_path, monkeypatch):
    text = (DOCS / PAGE).read_text(encoding="utf-8")
    code = "".join(c for lang, c, _ in code_blocks(text) if lang == "python")
    for step in ("HebbianOptimizer", "save_weights", "pretrained_cfg_overlay", "AdamW", "lr_scheduler"):
        assert step in code, f"{PAGE} no longer shows {step}"
    run_page(PAGE, tmp_path, monkeypatch)
    assert (tmp_path / "softhebb_3l.safetensors").is_file()
