"""Loading one backbone outside an extraction run (fakeprobe.extractor.backbones.load)."""

from __future__ import annotations

import numpy as np
import pytest

from fakeprobe.errors import ConfigMismatch, UnknownComponent
from fakeprobe.extractor.backbones.load import config_differences, load_backbone


def test_a_registered_backbone_is_built_and_embeds():
    backbone = load_backbone("test-grey", device="cpu", batch_size=4)
    assert backbone.name == "test-grey" and backbone.dim == 1
    crops = np.full((3, backbone.crop.size, backbone.crop.size, 3), 200, np.uint8)
    assert backbone.embed(crops).shape == (3, 1)


def test_the_recorded_config_must_match():
    recorded = load_backbone("test-grey").config()
    assert load_backbone("test-grey", expected=recorded).config() == recorded
    # a key the backbone does not report (an older cache's extra field) is not compared
    assert load_backbone("test-grey", expected={**recorded, "note": "x"}) is not None
    with pytest.raises(ConfigMismatch, match=r"crop_size: 99 vs 16.*--weights test-grey=PATH"):
        load_backbone("test-grey", expected={**recorded, "crop_size": 99})


def test_differences_name_each_key_both_ways():
    assert config_differences({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}) == [
        "b: 2 vs 5"]
    assert config_differences({}, {"a": 1}) == []


def test_an_unknown_backbone_is_a_typed_error():
    with pytest.raises(UnknownComponent, match="unknown backbone 'no-such'"):
        load_backbone("no-such")
