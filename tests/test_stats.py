"""Matched statistics and the paired bootstrap: the figures equal Ultralytics' own, verdicts say what the data says."""

import os

import numpy as np
import pytest

from npuyolo.stats.bootstrap import detection_metrics, paired_bootstrap, prepare
from npuyolo.stats.compare import Verdict, compare_stats, seed_gap
from npuyolo.stats.matched import MatchedStats, StatsError, load_stats, save_stats

NAMES = {0: "stop", 1: "yield", 2: "speed", 3: "cross"}


def random_per_image(seed: int, images: int = 60, classes: int = 4) -> dict[str, list]:
    """Validator-shaped per-image lists: confident predictions are more often right, as a trained model's are."""
    rng = np.random.default_rng(seed)
    per = {"tp": [], "conf": [], "pred_cls": [], "target_cls": [], "target_img": []}
    for _ in range(images):
        n, m = int(rng.integers(0, 40)), int(rng.integers(0, 5))
        conf = (rng.random(n) ** 2).astype(np.float32)
        per["conf"].append(conf)
        per["pred_cls"].append(rng.integers(0, classes, n).astype(float))
        per["tp"].append(rng.random((n, 10)) < conf[:, None] * np.linspace(0.9, 0.2, 10))
        t = rng.integers(0, classes, m).astype(float)
        per["target_cls"].append(t)
        per["target_img"].append(np.unique(t))
    return per


def other_model(per: dict[str, list], seed: int) -> dict[str, list]:
    """Another model's predictions on the same images and labels (a compared pair shares its targets)."""
    other = random_per_image(seed, images=len(per["tp"]))
    return {**other, "target_cls": per["target_cls"], "target_img": per["target_img"]}


def as_stats(per: dict[str, list], names=NAMES) -> MatchedStats:
    return MatchedStats.from_validator(per, [f"/d/images/val/im{i}.jpg" for i in range(len(per["tp"]))], names, "letterbox")


def ultralytics_metrics(per: dict[str, list], pick=None) -> np.ndarray:
    from ultralytics.utils.metrics import ap_per_class

    idx = range(len(per["tp"])) if pick is None else pick
    cat = {k: np.concatenate([per[k][i] for i in idx]) for k in ("tp", "conf", "pred_cls", "target_cls")}
    r = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])
    return np.array([r[5][:, 0].mean(), r[5].mean(), r[2].mean(), r[3].mean()])


def test_metrics_equal_ultralytics_on_the_set_and_on_a_resample():
    per = random_per_image(1)
    stats = as_stats(per)
    np.testing.assert_allclose(detection_metrics(stats), ultralytics_metrics(per), rtol=0, atol=1e-12)
    counts = np.bincount(np.random.default_rng(5).integers(0, 60, 60), minlength=60)
    # the resample validated for real: every image repeated as often as it was drawn
    np.testing.assert_allclose(detection_metrics(prepare(stats), counts),
                               ultralytics_metrics(per, np.repeat(np.arange(60), counts)), rtol=0, atol=1e-12)


def test_metrics_equal_ultralytics_where_false_boxes_trail_and_a_class_has_no_hit():
    """AP stops at each class's last right box (the false ones after it cannot change it): the same figures."""
    per = confident_model(seed=21, images=50)
    for i in range(len(per["tp"])):  # class 3 is never right: all its boxes false
        per["tp"][i] = per["tp"][i] & (per["pred_cls"][i] != 3)[:, None]
    stats = as_stats(per)
    np.testing.assert_allclose(detection_metrics(stats), ultralytics_metrics(per), rtol=0, atol=1e-12)
    counts = np.bincount(np.random.default_rng(4).integers(0, 50, 50), minlength=50)
    np.testing.assert_allclose(detection_metrics(prepare(stats), counts),
                               ultralytics_metrics(per, np.repeat(np.arange(50), counts)), rtol=0, atol=1e-12)


def test_identical_models_differ_by_exactly_zero_and_are_tied():
    stats = as_stats(random_per_image(2))
    result = compare_stats([stats, stats], ["a", "b"], n=200, seed=0)
    for metric in ("map50", "map50_95", "precision", "recall"):
        pair = result.pair("a", "b", metric)
        assert pair.diff.value == pair.diff.low == pair.diff.high == 0.0
        assert pair.verdict is Verdict.TIED and pair.text == "tied within noise"


def missing_half(per: dict[str, list]) -> dict[str, list]:
    """The same model, but on every other image it finds nothing."""
    out = {k: list(v) for k, v in per.items()}
    for i in range(0, len(out["tp"]), 2):
        out["tp"][i] = out["tp"][i][:0]
        out["conf"][i] = out["conf"][i][:0]
        out["pred_cls"][i] = out["pred_cls"][i][:0]
    return out


def confident_model(seed: int = 3, images: int = 80) -> dict[str, list]:
    """A good detector: one confident, correct box per label, plus a few weak false ones."""
    rng = np.random.default_rng(seed)
    per = {"tp": [], "conf": [], "pred_cls": [], "target_cls": [], "target_img": []}
    for _ in range(images):
        t = rng.integers(0, 4, int(rng.integers(1, 4))).astype(float)
        fp = int(rng.integers(0, 3))
        per["target_cls"].append(t)
        per["target_img"].append(np.unique(t))
        per["pred_cls"].append(np.concatenate([t, rng.integers(0, 4, fp).astype(float)]))
        per["conf"].append(np.concatenate([0.6 + 0.4 * rng.random(len(t)), 0.3 * rng.random(fp)]).astype(np.float32))
        per["tp"].append(np.concatenate([np.ones((len(t), 10), bool), np.zeros((fp, 10), bool)]))
    return per


def test_a_model_that_misses_half_the_objects_is_behind_with_an_interval_excluding_zero():
    per = confident_model()
    good, bad = as_stats(per), as_stats(missing_half(per))
    result = compare_stats([good, bad], ["good", "half"], n=300, seed=1)
    pair = result.pair("good", "half", "map50")
    assert pair.diff.value > 0.3 and pair.diff.low > 0, pair
    assert pair.verdict is Verdict.AHEAD and pair.text == "good ahead"
    flipped = compare_stats([bad, good], ["half", "good"], n=300, seed=1).pair("half", "good", "recall")
    assert flipped.verdict is Verdict.BEHIND and flipped.diff.high < 0 and flipped.text == "good ahead"
    half = result.models[1]
    assert half.map50.low <= half.map50.value <= half.map50.high


def test_the_same_seed_gives_the_same_resamples_and_models_are_paired():
    per = random_per_image(4)
    a, b = as_stats(per), as_stats(other_model(per, 5))
    p1, boot1 = paired_bootstrap([a, b], ["a", "b"], n=50, seed=7)
    p2, boot2 = paired_bootstrap([a, b], ["a", "b"], n=50, seed=7)
    assert np.array_equal(boot1, boot2) and np.array_equal(p1, p2)
    assert not np.array_equal(boot1, paired_bootstrap([a, b], ["a", "b"], n=50, seed=8)[1])


def test_models_of_other_images_or_classes_are_one_clear_error():
    a = as_stats(random_per_image(4))
    fewer = {k: v[:-1] for k, v in random_per_image(4).items()}
    with pytest.raises(StatsError, match="not scored on the same images"):
        compare_stats([a, as_stats(fewer)], ["a", "b"], n=100)
    with pytest.raises(StatsError, match="different classes"):
        compare_stats([a, as_stats(random_per_image(4), {0: "a", 1: "b", 2: "c", 3: "d"})], ["a", "b"], n=100)


def test_image_order_does_not_matter():
    per = random_per_image(6)
    a = as_stats(per)
    order = list(reversed(range(60)))
    shuffled = MatchedStats.from_validator({k: [v[i] for i in order] for k, v in per.items()},
                                           [f"/d/images/val/im{i}.jpg" for i in order], NAMES, "letterbox")
    result = compare_stats([a, shuffled], ["a", "b"], n=100)
    assert all(p.diff.value == p.diff.low == p.diff.high == 0 for p in result.pairs)


def test_stats_files_round_trip_and_a_damaged_one_is_one_line(tmp_path):
    stats = as_stats(random_per_image(7))
    path = save_stats(stats, tmp_path / "s.npz")
    back = load_stats(path)
    assert back.images == stats.images and back.names == stats.names and np.array_equal(back.tp, stats.tp)
    np.testing.assert_array_equal(detection_metrics(back), detection_metrics(stats))
    assert not [p for p in os.listdir(tmp_path) if p != "s.npz"]  # no temporary left behind
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(StatsError, match="damaged"):
        load_stats(tmp_path / "bad.npz")
    # an .npz holding a pickled object is refused, never unpickled
    with open(tmp_path / "pickle.npz", "wb") as fh:
        np.savez(fh, header=np.array([{"format": 1}], dtype=object))
    with pytest.raises(StatsError):
        load_stats(tmp_path / "pickle.npz")


def test_seed_gap_combines_seeds_and_images():
    per = confident_model(seed=8)
    strong = [as_stats(per)] * 3  # three replicates of one data set (identical here: no seed spread)
    weak = [as_stats(missing_half(per))] * 3
    gap = seed_gap(strong, weak, "strong", "weak", n=200)
    assert gap.verdict is Verdict.AHEAD and gap.gap.low > 0
    assert gap.a_sd == 0 and len(gap.a_values) == 3
    same = seed_gap(strong, strong, "x", "y", n=100)
    assert same.gap.value == 0 and same.verdict is Verdict.TIED


def test_map50_alone_equals_the_full_computation_and_its_samples_are_paired():
    from npuyolo.stats.bootstrap import map50, map50_samples

    per = random_per_image(9)
    a, b = as_stats(per), as_stats(other_model(per, 10))
    w = np.bincount(np.random.default_rng(2).integers(0, 60, 60), minlength=60)
    assert map50(prepare(a)) == pytest.approx(detection_metrics(a)[0], abs=1e-12)
    assert map50(prepare(a), w) == pytest.approx(detection_metrics(prepare(a), w)[0], abs=1e-12)
    point_a, sa = map50_samples(a, n=50, seed=3)
    _, boot = paired_bootstrap([a, b], ["a", "b"], n=50, seed=3)
    assert point_a == pytest.approx(detection_metrics(a)[0], abs=1e-12)
    np.testing.assert_allclose(sa, boot[:, 0, 0], atol=1e-12)  # the same resamples as compare draws


def test_models_scored_against_other_labels_of_the_same_images_are_refused():
    """Same image names, edited labels (the data set changed between two scorings): not a paired comparison."""
    per = confident_model(seed=2, images=20)
    edited = {k: list(v) for k, v in per.items()}
    edited["target_cls"][0] = edited["target_cls"][0][:0]
    with pytest.raises(StatsError, match="different labels"):
        compare_stats([as_stats(per), as_stats(edited)], ["a", "b"], n=100)


@pytest.mark.parametrize("damage", ["class_out_of_range", "negative_class", "confidence_above_one", "nan_confidence"])
def test_statistics_naming_impossible_classes_or_confidences_are_damaged(damage):
    per = confident_model(seed=3, images=10)
    if damage == "class_out_of_range":
        per["target_cls"][0] = per["target_cls"][0] * 0 + 7  # the model names 4 classes
    elif damage == "negative_class":
        per["pred_cls"][0] = per["pred_cls"][0] * 0 - 1
    elif damage == "confidence_above_one":
        per["conf"][0] = per["conf"][0] + 5
    else:
        per["conf"][0] = per["conf"][0] * np.nan
    with pytest.raises(StatsError, match="damaged"):
        as_stats(per)


def test_a_link_a_fifo_or_an_inflating_file_is_not_read_as_statistics(tmp_path):
    import os

    real = save_stats(as_stats(confident_model(seed=4, images=10)), tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(real)
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(StatsError, match="not a regular file"):
        load_stats(tmp_path / "link.npz")
    with pytest.raises(StatsError, match="not a regular file"):
        load_stats(tmp_path / "fifo.npz")
    with open(tmp_path / "bomb.npz", "wb") as fh:  # 2 MB on disk, 600 MB unpacked
        np.savez_compressed(fh, header=np.array('{"format": 1}'), conf=np.zeros(150_000_000, np.float32))
    with pytest.raises(StatsError, match="unpack"):
        load_stats(tmp_path / "bomb.npz")
    with open(tmp_path / "deep.npz", "wb") as fh:
        np.savez(fh, header=np.array("[" * 200_000))
    with pytest.raises(StatsError, match="damaged"):
        load_stats(tmp_path / "deep.npz")


def test_a_kept_bootstrap_is_read_back_and_a_damaged_one_is_computed_again(tmp_path, monkeypatch):
    """A report rendered in two languages and two formats drew its 1,000 resamples four times: they are kept under a
    key of the statistics' content, n and seed, and read back; a damaged file is computed again, an unwritable folder
    keeps nothing and still answers."""
    import numpy as np

    from npuyolo.stats import bootstrap
    from npuyolo.stats.compare import compare_stats

    a, b = as_stats(confident_model(seed=3, images=30)), as_stats(missing_half(confident_model(seed=3, images=30)))
    first = compare_stats([a, b], ["a", "b"], n=200, keep_in=tmp_path / "kept")
    (kept,) = (tmp_path / "kept").iterdir()
    monkeypatch.setattr(bootstrap, "detection_metrics", lambda *args: pytest.fail("computed again"))
    again = compare_stats([a, b], ["x", "y"], n=200, keep_in=tmp_path / "kept")  # labels do not change the numbers
    assert [m.map50 for m in again.models] == [m.map50 for m in first.models]
    assert [p.diff for p in again.pairs] == [p.diff for p in first.pairs]
    monkeypatch.undo()
    other_seed = compare_stats([a, b], ["a", "b"], n=200, seed=1, keep_in=tmp_path / "kept")
    assert len(list((tmp_path / "kept").iterdir())) == 2 and other_seed.pairs[0].diff != first.pairs[0].diff
    kept.write_bytes(b"damaged")
    assert [p.diff for p in compare_stats([a, b], ["a", "b"], n=200, keep_in=tmp_path / "kept").pairs] == [
        p.diff for p in first.pairs]
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert compare_stats([a, b], ["a", "b"], n=200, keep_in=blocked / "kept").pairs[0].diff == first.pairs[0].diff
    assert np.isfinite(first.pairs[0].diff.value)
