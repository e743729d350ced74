"""feature_locality: the per-cell linear probes tell features that hold an AU in its region from features that hold
it everywhere; receptive_field: how much of the face each map cell sees."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.image_processing_sevnet import SEVNetImageProcessor
from sevnet_hf.training.attention_analysis import feature_locality
from tests.fixtures_data import make_prepared_dataset


class QuadrantFeatures(torch.nn.Module):
    """A 2x2 visual map whose cells are the mean colour of their own quadrant (a receptive field of one quadrant)."""

    def forward(self, pixel_values):
        return SimpleNamespace(visual_features=F.adaptive_avg_pool2d(pixel_values, 2))


class FaceWideFeatures(QuadrantFeatures):
    """Every cell holds all four quadrants' colours (a receptive field spanning the face), in the same order."""

    def forward(self, pixel_values):
        quadrants = super().forward(pixel_values).visual_features.flatten(1)  # B x 12
        return SimpleNamespace(visual_features=quadrants[:, :, None, None].expand(-1, -1, 2, 2))


@pytest.fixture(scope="module")
def quadrant_faces(tmp_path_factory):
    # Each AU brightens one quadrant of the face; 4 subjects per part, 10 frames each.
    data = make_prepared_dataset(tmp_path_factory.mktemp("faces"), aus=(1, 2, 4), subjects_per_part=4, frames=10)
    return load_prepared(data), list(read_metadata(data)["au_columns"]), int(read_metadata(data)["image_size"])


def test_feature_locality_finds_features_that_hold_the_au_in_its_region(quadrant_faces):
    dataset, columns, aligned = quadrant_faces
    processor = SEVNetImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    local = feature_locality(QuadrantFeatures(), processor, dataset, columns, aligned_size=aligned)
    assert set(local) == set(columns)
    for scores in local.values():
        assert scores["region_cells"] == 1  # one quadrant of the 2x2 map
        assert scores["roc_auc_region"] > 0.95 and scores["roc_auc_other"] < 0.75
        assert scores["best_cell_in_region"]


def test_feature_locality_sees_no_region_when_every_cell_holds_the_whole_face(quadrant_faces):
    dataset, columns, aligned = quadrant_faces
    processor = SEVNetImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    wide = feature_locality(FaceWideFeatures(), processor, dataset, columns, aligned_size=aligned)
    for scores in wide.values():
        assert scores["roc_auc_region"] > 0.95  # the AU is detected from every cell ...
        assert scores["roc_auc_other"] == pytest.approx(scores["roc_auc_region"])  # ... and equally well


def test_feature_locality_names_a_missing_column_and_an_empty_set(quadrant_faces):
    dataset, columns, aligned = quadrant_faces
    processor = SEVNetImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    with pytest.raises(ValueError, match="au_regions"):
        feature_locality(QuadrantFeatures(), processor, dataset.remove_columns("au_regions"), columns)
    with pytest.raises(ValueError, match="empty"):
        feature_locality(QuadrantFeatures(), processor, dataset.select([]), columns)


def test_receptive_field_of_a_patch_encoder_is_its_own_cell_and_layer3_sees_less_than_layer4():
    from sevnet_hf.modeling_sevnet import create_backbone
    from sevnet_hf.training.attention_analysis import receptive_field

    torch.manual_seed(0)
    patches = torch.nn.Conv2d(3, 4, kernel_size=16, stride=16).train()
    local = receptive_field(patches, torch.rand(2, 3, 64, 64))
    assert local["grid"] == [4, 4] and local["crop"] == 64 and local["uniform_own_cell"] == 1 / 16
    assert local["own_cell"] == pytest.approx(1.0) and local["edge_own_cell"] == pytest.approx(1.0)
    assert local["radius_50"] < 8  # half of a 16 px cell's weight lies within its inner part
    assert patches.training  # the mode it came in with
    images = torch.rand(2, 3, 96, 96)
    whole = receptive_field(create_backbone("resnet18", 16, {"zero_init_last": False}), images)
    cut = receptive_field(create_backbone("resnet18", 16, {"zero_init_last": False}, feature_stage=3), images)
    assert whole["grid"] == cut["grid"] == [6, 6]
    assert cut["radius_50"] < whole["radius_50"] and cut["own_cell"] > whole["own_cell"] > whole["uniform_own_cell"]
