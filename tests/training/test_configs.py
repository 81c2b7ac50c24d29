"""The scale-out launch configs in training/configs parse and say what they claim (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
REPO = CONFIGS.parents[1]


def load_yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_zero3_yaml_and_deepspeed_json():
    cfg = load_yaml("accelerate_zero3.yaml")
    assert cfg["distributed_type"] == "DEEPSPEED"
    assert cfg["mixed_precision"] == "bf16" and cfg["use_cpu"] is False
    assert isinstance(cfg["num_processes"], int) and cfg["num_processes"] >= 1  # placeholder, --num_processes overrides
    ds_file = REPO / cfg["deepspeed_config"]["deepspeed_config_file"]
    assert ds_file == CONFIGS / "deepspeed_zero3.json"
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"]["enabled"] == "auto"
    # batch sizes are left to accelerate ("auto") so the trainers' own flags decide them
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_accumulation_steps"] == "auto"


def test_fsdp_yaml():
    cfg = load_yaml("accelerate_fsdp.yaml")
    assert cfg["distributed_type"] == "FSDP"
    assert cfg["mixed_precision"] == "bf16" and cfg["use_cpu"] is False
    assert isinstance(cfg["num_processes"], int) and cfg["num_processes"] >= 1
    fsdp = cfg["fsdp_config"]
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    assert LlamaDecoderLayer.__name__ == fsdp["fsdp_transformer_layer_cls_to_wrap"]


@pytest.mark.parametrize("name,kind", [("accelerate_zero3.yaml", "DEEPSPEED"), ("accelerate_fsdp.yaml", "FSDP")])
def test_accelerate_loads_config(name, kind):
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    cfg = config_args.load_config_from_file(str(CONFIGS / name))
    assert str(cfg.distributed_type).split(".")[-1] == kind
    assert str(cfg.mixed_precision) == "bf16"
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["deepspeed_config_file"].endswith("deepspeed_zero3.json")
    else:
        assert cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
