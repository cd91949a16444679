"""One rendered SFT stage, run for real: `llf-recipes run` -> `llamafactory-cli train` on the tiny model, on CPU."""

import json

import pytest
from conftest import make_data_dir, run_cli_subprocess

pytestmark = pytest.mark.engine

CPU_QLORA_OFF = ["~quantization_bit", "~quantization_method", "~quantization_type", "~double_quantization"]


def test_sft_huanhuan_trains_on_the_tiny_model(tiny_model, catalog, tmp_path):
    data = make_data_dir(tmp_path / "data", catalog, ["huanhuan"])
    out = tmp_path / "saves"
    sets = [f"model_name_or_path={tiny_model}", f"dataset_dir={data}", "max_steps=3", "cutoff_len=128",
            "logging_steps=1", "save_steps=3", "preprocessing_num_workers=1", *CPU_QLORA_OFF]
    argv = ["run", "sft-huanhuan", "--device", "cpu", "--output-root", out]
    for s in sets:
        argv += ["--set", s]
    proc = run_cli_subprocess(*argv, env={"DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"})
    stage_dir = out / "sft-huanhuan" / "sft"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (stage_dir / "adapter_model.safetensors").is_file()
    state = json.loads((stage_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(l > 0 for l in losses)
    adapter = json.loads((stage_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    # what ran is on disk beside the result, and the log holds the trainer's output
    assert (stage_dir / "llf-sft.yaml").is_file()
    assert "train_loss" in (stage_dir / "llf-sft.log").read_text()
