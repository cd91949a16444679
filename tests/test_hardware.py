import pytest

from llf_recipes.errors import LlfError
from llf_recipes.hardware import (
    choose_deepspeed,
    cpu_layout,
    parse_gpus,
    parse_hostfile,
    parse_hostfile_text,
    plan_batch,
)


def test_hostfile_with_comments_and_blank_lines():
    layout = parse_hostfile_text("# cluster\n\nnode1 slots=8  # head\n  node2 slots=8\n", source="hf")
    assert [n.host for n in layout.nodes] == ["node1", "node2"]
    assert layout.world_size == 16 and layout.nnodes == 2 and layout.per_node == 8
    assert layout.master_addr == "node1"
    assert [n.line for n in layout.nodes] == [3, 4]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("node1 slots=8\nnode2 slot=8\n", 2, "slots=N"),
        ("node1 slots=8\nnode2 slots=x\n", 2, "positive whole number"),
        ("node1 slots=0\n", 1, "positive whole number"),
        ("node1 slots=8\nnode1 slots=8\n", 2, "already listed on line 1"),
        ("node1 slots=8\nnode2 slots=4\n", 2, "slots=4"),
        ("node1 slots=8 extra\n", 1, "expected"),
    ],
)
def test_broken_hostfiles_name_the_line(text, line, words):
    with pytest.raises(LlfError) as exc:
        parse_hostfile_text(text, source="my-hosts")
    assert f"my-hosts:{line}" in str(exc.value)
    assert words in str(exc.value)


def test_empty_and_missing_hostfile(tmp_path):
    with pytest.raises(LlfError, match="no hosts"):
        parse_hostfile_text("# nothing\n\n", source="x")
    with pytest.raises(LlfError, match="does not exist"):
        parse_hostfile(tmp_path / "nope")


def test_gpu_lists():
    layout = parse_gpus("0,2,3")
    assert layout.world_size == 3 and layout.visible_devices() == "0,2,3" and layout.master_addr == "127.0.0.1"
    with pytest.raises(LlfError, match="not a device index"):
        parse_gpus("0,a")
    with pytest.raises(LlfError, match="twice"):
        parse_gpus("1,1")


def test_gpu_ranges():
    assert parse_gpus("0-3").visible_devices() == "0,1,2,3"
    assert parse_gpus("0-1,4,6-7").visible_devices() == "0,1,4,6,7"
    assert parse_gpus("5-5").world_size == 1
    for spec, words in (("3-1", "runs backwards"), ("0-1,1", "twice"), ("0-", "not a device index or a range"),
                        ("-2", "not a device index or a range"), ("0-99999999", "more than 1024 devices")):
        with pytest.raises(LlfError, match=words):
            parse_gpus(spec)


@pytest.mark.parametrize("spec, words", [("", "names no device"), (" ", "names no device"),
                                         ("0,,1", "an empty item between commas"), ("0,", "an empty item")])
def test_an_empty_gpu_list_or_item_is_a_usage_error_naming_the_option(cli, spec, words):
    code, out, err = cli("render", "sft-huanhuan", "--gpus", spec)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: --gpus {spec!r}") and words in err and "Traceback" not in err


@pytest.mark.parametrize("world", [1, 2, 4, 8, 16])
def test_batch_plan_keeps_the_global_batch(world):
    layout = parse_hostfile_text(f"localhost slots={world}\n") if world <= 8 else parse_hostfile_text("a slots=8\nb slots=8\n")
    plan = plan_batch(16, 4, layout)
    assert plan.per_device_train_batch_size * plan.gradient_accumulation_steps * world == 16
    assert plan.per_device_train_batch_size <= 4


def test_batch_plan_error_names_the_numbers():
    layout = parse_hostfile_text("a slots=8\nb slots=8\nc slots=8\n")
    with pytest.raises(LlfError) as exc:
        plan_batch(16, 4, layout)
    text = str(exc.value)
    assert "global batch 16 does not divide over 24 devices" in text and "16 % 24 = 16" in text
    assert exc.value.key == "global_batch_size"


def test_deepspeed_choice():
    one = parse_gpus("0")
    node = parse_gpus("0,1,2,3")
    two = parse_hostfile_text("a slots=8\nb slots=8\n")
    assert choose_deepspeed(one) is None
    assert choose_deepspeed(node) == "z2"
    assert choose_deepspeed(two) == "z3"
    assert choose_deepspeed(one, offload=True) == "z2_offload"
    assert choose_deepspeed(two, offload=True) == "z3_offload"
    assert choose_deepspeed(node, "none") is None
    assert choose_deepspeed(one, "z3") == "z3"
    assert choose_deepspeed(cpu_layout(2)) is None
    with pytest.raises(LlfError, match="unknown"):
        choose_deepspeed(one, "z4")
