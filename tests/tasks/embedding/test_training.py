"""What an embedding run trains: the losses against brute-force formulas, the second view, the
embedding layer that reads the convolution features, and runs saved before those existed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.models.build import resolve_architecture
from cnnlab.tasks.embedding.losses import instance_contrastive_loss, margin_softmax_loss
from cnnlab.tasks.embedding.model import EmbeddingNet, embedding_net, shifted_view
from cnnlab.tasks.embedding.task import CONTRASTIVE_TEMPERATURE, Embedding


def _unit(rows: int, columns: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed)),
                                         dim=1)


def test_arcface_equals_the_formula_written_out():
    embeddings, weights = _unit(6, 8, 0), _unit(4, 8, 1)
    targets = torch.tensor([0, 1, 2, 3, 0, 2])
    cosines = embeddings @ weights.T
    expected = 0.0
    for row, target in enumerate(targets.tolist()):
        angle = math.acos(float(cosines[row, target]))
        logits = [30 * float(c) for c in cosines[row]]
        logits[target] = 30 * math.cos(angle + 0.5)
        expected += -logits[target] + math.log(sum(math.exp(v) for v in logits))
    loss = margin_softmax_loss(cosines, targets, kind="arcface", margin=0.5, scale=30.0)
    assert float(loss) == pytest.approx(expected / 6, rel=1e-5)


def test_the_instance_term_equals_nt_xent_written_out():
    first, second = _unit(5, 8, 2), _unit(5, 8, 3)
    both = torch.cat([first, second]).double().numpy()
    total = 0.0
    for anchor in range(10):
        partner = (anchor + 5) % 10
        others = [float(both[anchor] @ both[j]) / 2.0 for j in range(10) if j != anchor]
        total += -float(both[anchor] @ both[partner]) / 2.0 + math.log(sum(math.exp(v) for v in others))
    assert float(instance_contrastive_loss(first, second, temperature=2.0)) == pytest.approx(total / 10, rel=1e-5)
    # two identical views of well-spread images cost less than two unrelated ones
    spread = _unit(5, 8, 4)
    assert instance_contrastive_loss(spread, spread, temperature=2.0) < instance_contrastive_loss(first, second,
                                                                                                   temperature=2.0)


def test_the_second_view_is_each_image_shifted_by_its_own_offset_and_maybe_mirrored():
    torch.manual_seed(0)
    images = torch.rand(32, 3, 28, 28)
    view = shifted_view(images)
    assert view.shape == images.shape
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3), mode="replicate")
    found = []
    for index in range(len(images)):
        matches = [(top, left, mirror) for top in range(7) for left in range(7) for mirror in (False, True)
                   if torch.equal(view[index], (padded[index, :, top:top + 28, left:left + 28].flip(-1) if mirror
                                                else padded[index, :, top:top + 28, left:left + 28]))]
        assert matches, f"image {index} is not a shifted copy"
        found.append(matches[0])
    assert len(set(found)) > 8  # offsets and mirroring drawn per image, not one for the batch
    assert any(mirror for _, _, mirror in found) and not all(mirror for _, _, mirror in found)


def _guide(head: str, *, views: bool = False) -> EmbeddingNet:
    return embedding_net(resolve_architecture("guide-cnn"), in_channels=1, image_size=(28, 28), dimensions=16,
                         identities=7, head=head, views=views)


def test_the_embedding_layer_reads_the_convolution_features_by_default():
    model = _guide("features")
    # guide-cnn's head was flatten → fc1 (576 → 64) → ReLU → fc2: now flatten → one layer 576 → 16
    assert isinstance(model.backbone.head.fc1, nn.Linear) and model.backbone.head.fc1.in_features == 576
    assert model.backbone.head.fc1.out_features == 16
    assert isinstance(model.backbone.head.relu4, nn.Identity) and isinstance(model.backbone.head.fc2, nn.Identity)
    assert model.classifier_path == "backbone.head.fc1"
    old = _guide("penultimate")
    assert old.backbone.head.fc1.out_features == 64 and old.backbone.head.fc2.out_features == 16
    assert old.classifier_path == "backbone.head.fc2"
    model.eval()
    outputs = model(torch.rand(3, 1, 28, 28))
    assert outputs.shape == (3, 16) and torch.allclose(outputs.norm(dim=1), torch.ones(3), atol=1e-5)


def test_a_head_whose_only_dense_layer_is_the_classifier_is_left_as_it_is():
    model = embedding_net(resolve_architecture("fast-cnn"), in_channels=1, image_size=(28, 28), dimensions=16,
                          identities=None, head="features")
    assert model.classifier_path == "backbone.head.fc" and model.backbone.head.fc.out_features == 16


def test_training_outputs_carry_the_cosines_and_the_second_view_and_the_loss_adds_the_instance_term():
    torch.manual_seed(0)
    task = Embedding([str(i) for i in range(7)], embedding_dim=16, contrastive=0.5)
    model = task.build_model(resolve_architecture("guide-cnn"), in_channels=1, image_size=(28, 28)).train()
    assert model.views
    images, targets = torch.rand(8, 1, 28, 28), torch.arange(8) % 7
    outputs = model(images)
    assert outputs.shape == (8, 16 + 7 + 16)
    first, cosines, second = outputs[:, :16], outputs[:, 16:23], outputs[:, 23:]
    assert torch.allclose(cosines, model.margin(first), atol=1e-6)
    assert torch.allclose(second.norm(dim=1), torch.ones(8), atol=1e-5)
    expected = (margin_softmax_loss(cosines, targets, kind="arcface", margin=0.5, scale=30.0)
                + 0.5 * instance_contrastive_loss(first, second, temperature=CONTRASTIVE_TEMPERATURE))
    assert float(task.loss(outputs, targets).detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    model.eval()
    with torch.no_grad():
        evaluated = model(images)
    assert evaluated.shape == (8, 16)  # the views exist only in training
    margin_only = margin_softmax_loss(model.margin(evaluated), targets, kind="arcface", margin=0.5, scale=30.0)
    assert float(task.loss(evaluated, targets)) == pytest.approx(float(margin_only), rel=1e-6)


def test_the_triplet_loss_takes_the_instance_term_too():
    torch.manual_seed(0)
    model = embedding_net(resolve_architecture("guide-cnn"), in_channels=1, image_size=(28, 28), dimensions=16,
                          identities=None, views=True).train()
    task = Embedding([str(i) for i in range(4)], embedding_dim=16, metric_loss="triplet", contrastive=1.0)
    outputs = model(torch.rand(8, 1, 28, 28))
    assert outputs.shape == (8, 32)
    assert np.isfinite(float(task.loss(outputs, torch.arange(8) % 4)))


def test_a_run_saved_before_the_choices_existed_is_rebuilt_as_it_was_trained():
    saved = {"name": "embedding", "identities": ["a", "b"], "embedding_dim": 16, "metric_loss": "arcface",
             "margin": 0.5, "scale": 30.0, "verify_far": 0.01, "threshold": 0.4}
    task = Embedding.from_json(saved)
    assert task.head == "penultimate" and task.contrastive == 0.0
    model = task.build_model(resolve_architecture("guide-cnn"), in_channels=1, image_size=(28, 28))
    assert model.backbone.head.fc2.out_features == 16 and not model.views
    assert Embedding.from_json(task.to_json()).to_json() == task.to_json()
    fresh = Embedding(["a", "b"], embedding_dim=16)
    assert (fresh.head, fresh.contrastive) == ("features", 1.0)
