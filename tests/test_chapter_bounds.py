"""Tests for negatives.chapters.bounds: parameters, the per-run evaluation, summaries, verdicts.

The bound terms are checked on feature sets where the theorems must hold exactly (every sample
sits on its class mean) and against per-anchor loops; the verdict rules on synthetic tables,
one case per verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from negatives import bounds, probes
from negatives.chapters import bounds as chapter
from negatives.data import load_dataset
from negatives.models import build_model
from negatives.train import TrainConfig

# ---------------------------------------------------------------------------------------------
# Parameters


def test_params_from_profile_defaults_and_overrides() -> None:
    p = chapter.Params.from_profile("smoke", num_passes=3, seeds=1, num_negatives=[1, 7])
    assert p.num_passes == 3
    assert p.num_augmentations == chapter.Params.profiles["smoke"].num_augmentations
    assert p.scan.seeds == 1 and p.scan.num_negatives == (1, 7)
    # None means "the profile's value", for the chapter's fields and the K-scan's alike.
    q = chapter.Params.from_profile("smoke", num_passes=None, seeds=None)
    assert q.num_passes == chapter.Params.profiles["smoke"].num_passes
    assert q.scan == chapter.kscan.Params.from_profile("smoke")
    table = p.table()
    assert {"num_negatives", "num_passes", "num_augmentations", "results_dir"} <= set(
        table["parameter"]
    )
    # an unset data_root reads "None", not pandas' "nan"
    assert table.set_index("parameter").loc["data_root", "value"] == "None"


def test_params_share_the_kscan_configs() -> None:
    # Chapter 4 embeds the same kscan.Params from the same overrides: the configs must be identical.
    overrides = dict(num_negatives=[3, 7], seeds=2, epochs=1)
    p = chapter.Params.from_profile("smoke", num_passes=4, **overrides)
    assert p.scan.configs() == chapter.kscan.Params.from_profile("smoke", **overrides).configs()


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"num_negatives": [3, -1]}, "num_negatives"),
        ({"latent_num_negatives": [0]}, "latent_num_negatives"),
        ({"num_passes": 0}, "num_passes"),
        ({"num_augmentations": 0}, "num_augmentations"),
        ({"num_augmentations": 2.5}, "num_augmentations"),
        ({"eval_seed": -1}, "eval_seed"),
        ({"seeds": 0}, "seeds"),
        ({"modes": ["batch", "queue"]}, "modes"),
        ({"dataset": "mnist"}, "dataset"),
        ({"temperature": -0.5}, "temperature"),
        ({"num_pases": 3}, "num_pases"),
        ({"latent_num_negatives": [7, 1023], "latent_test_size": 500}, "latent_num_negatives"),
        ({"num_negatives": [3, 255], "test_size": 100}, "num_negatives"),
    ],
)
def test_bad_params_name_the_parameter(overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        chapter.Params.from_profile("smoke", **overrides)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        chapter.Params.from_profile("huge")


# ---------------------------------------------------------------------------------------------
# Per-run evaluation on synthetic features


def clustered_inputs(
    num_classes: int, per_class: int, dim: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Every sample exactly on its (unit) class vector: z = z⁺ = z̄ = μ_y, so d(f) = 0 and,
    per anchor, L_Info = ln Σ_c n_c e^{s_yc} - s_yy >= max(L_sub, ln n_y): both theorems hold
    for every batch, not only in expectation."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=gen), dim=1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    z = means[labels]
    return {"z": z, "z_positive": z, "z_bar": z, "labels": labels, "class_means": means}


def test_terms_on_exact_clusters_satisfy_both_bounds() -> None:
    inputs = clustered_inputs(num_classes=5, per_class=12, dim=6)
    for k in (2, 5, 19, 59):
        out = chapter.terms_from_inputs(
            inputs, temperature=0.5, num_negatives=k, num_passes=3, seed=1
        )
        assert set(chapter.TERMS) - {"linear_accuracy"} <= set(out)
        assert out["d_f"] == pytest.approx(0.0, abs=1e-12)
        assert 0.0 <= out["upsilon"] <= 1.0 and 0.0 <= out["tau"] <= 1.0
        assert out["proposed_bound"] <= out["info_loss"] + 1e-12
        assert out["curl_bound"] <= out["info_loss"] + 1e-12
        assert out["centroid_accuracy"] == pytest.approx(100.0)
        assert out["upsilon_uniform"] == bounds.coverage_probability(k + 1, num_classes=5)
        if out["upsilon"] > 0:
            # The inequality gives υ̂ L_sup^{covered} <= rhs, so rhs / υ̂ >= L_sup on covered batches.
            assert out["proposed_sup_upper_bound"] >= out["sup_loss_covered"] - 1e-12


def test_sup_loss_and_accuracy_against_a_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    c, n, d, t = 4, 40, 5, 0.3
    labels = torch.arange(n) % c
    means = torch.randn(c, d, generator=gen)
    z = torch.nn.functional.normalize(means[labels] + 0.8 * torch.randn(n, d, generator=gen), dim=1)
    z_bar = torch.nn.functional.normalize(z + 0.3 * torch.randn(n, d, generator=gen), dim=1)
    mu = bounds.mean_classifier_weights(z_bar, labels, c)
    inputs = {"z": z, "z_positive": z_bar, "z_bar": z_bar, "labels": labels, "class_means": mu}
    out = chapter.terms_from_inputs(inputs, temperature=t, num_negatives=7, num_passes=2, seed=0)
    sup, correct = 0.0, 0
    for i in range(n):
        scores = [float(z[i].double() @ mu[j].double()) / t for j in range(c)]
        sup += math.log(sum(math.exp(s) for s in scores)) - scores[int(labels[i])]
        bar_scores = [float(z_bar[i] @ mu[j]) for j in range(c)]
        correct += int(np.argmax(bar_scores) == int(labels[i]))
    assert out["sup_loss"] == pytest.approx(sup / n, rel=1e-6)
    assert out["centroid_accuracy"] == pytest.approx(100.0 * correct / n)


def test_vacuous_upper_bounds_are_infinite() -> None:
    # K + 1 = 3 < C = 4: no batch covers every class, so the proposed bound divides by υ = 0.
    out = chapter.terms_from_inputs(
        clustered_inputs(4, 6, 5), temperature=0.5, num_negatives=2, num_passes=2, seed=0
    )
    assert out["upsilon"] == 0.0 and out["upsilon_exact"] == 0.0
    assert out["proposed_sup_upper_bound"] == math.inf
    assert out["proposed_sup_upper_bound_exact_upsilon"] == math.inf
    # Two classes, one batch of everything: every anchor collides, 1 - τ = 0.
    out = chapter.terms_from_inputs(
        clustered_inputs(2, 5, 5), temperature=0.5, num_negatives=9, num_passes=1, seed=0
    )
    assert out["tau"] == 1.0
    assert out["curl_sup_upper_bound"] == math.inf
    assert math.isfinite(out["proposed_sup_upper_bound"])


# ---------------------------------------------------------------------------------------------
# Feature extraction and the cached evaluation of trained runs


def test_bound_inputs_images_and_latent(one_thread) -> None:
    digits = load_dataset("digits", train_size=100, test_size=50)
    model = build_model("cnn-small", 1, 8, width=8, proj_hidden=16, proj_dim=8, input_dim=64)
    config = TrainConfig(arch="cnn-small", width=8, proj_hidden=16, proj_dim=8)
    x = chapter.bound_inputs(model, digits, config, num_augmentations=3, seed=0)
    assert x["z"].shape == x["z_positive"].shape == x["z_bar"].shape == (50, 8)
    assert x["class_means"].shape == (10, 8)
    assert torch.allclose(x["z"].norm(dim=1), torch.ones(50), atol=1e-5)
    assert bool((x["z_bar"].norm(dim=1) <= 1 + 1e-5).all())  # a mean of unit vectors
    assert not torch.equal(x["z"], x["z_positive"])  # two different augmented views

    latent = load_dataset(
        "latent-class", num_classes=3, dim=6, noise=1.5, train_size=60, test_size=30
    )
    mlp = build_model("mlp", 1, 1, width=16, proj_hidden=16, proj_dim=4, input_dim=6)
    lconfig = TrainConfig(
        arch="mlp", positives="latent-class", width=16, proj_hidden=16, proj_dim=4
    )
    y = chapter.bound_inputs(mlp, latent, lconfig, num_augmentations=3, seed=0)
    # Positives are training samples of the anchor's class; z̄ is the class mean.
    labels = latent.test_labels
    assert torch.equal(y["z_bar"], y["class_means"][labels])
    z_train = torch.nn.functional.normalize(
        probes.extract_features(mlp, latent.train_images, which="projection"), dim=1
    )
    for i in range(len(labels)):
        same = z_train[latent.train_labels == labels[i]]
        assert bool((same == y["z_positive"][i]).all(dim=1).any())
    # A class with a single test sample still gets a positive (drawn from the training set).
    sparse = load_dataset("latent-class", num_classes=10, dim=6, train_size=60, test_size=12)
    assert bool((torch.bincount(sparse.test_labels, minlength=10) == 1).any())
    s_in = chapter.bound_inputs(mlp, sparse, lconfig, num_augmentations=1, seed=0)
    assert s_in["z_positive"].shape == (12, 4)
    out = chapter.terms_from_inputs(y, temperature=0.5, num_negatives=5, num_passes=2, seed=0)
    assert out["d_f"] == 0.0
    # The accuracy scores each sample's own feature (z̄ = μ_y would always be right).
    assert torch.equal(y["z_classify"], y["z"])
    pred = [int(np.argmax([float(y["z"][i] @ m) for m in y["class_means"]])) for i in range(30)]
    expected = 100.0 * float(np.mean(np.array(pred) == labels.numpy()))
    assert expected < 100.0  # noisy classes: the check can tell z from z̄
    assert out["centroid_accuracy"] == pytest.approx(expected)


def test_scan_bounds_end_to_end_and_cached(tmp_path, one_thread) -> None:
    p = chapter.Params.from_profile(
        "smoke",
        results_dir=str(tmp_path),
        train_size=120,
        test_size=60,
        num_negatives=[3, 7],
        seeds=1,
        epochs=1,
        width=8,
        latent_classes=4,
        latent_dim=6,
        latent_train_size=160,
        latent_test_size=64,
        latent_num_negatives=[3, 15],
        latent_epochs=1,
        num_passes=2,
        num_augmentations=2,
    )
    image = chapter.scan_bounds(p, "image")
    latent = chapter.scan_bounds(p, "latent")
    assert len(image) == len(p.scan.configs()) and len(latent) == len(p.scan.latent_configs())
    rows = pd.concat([image, latent], ignore_index=True)
    assert set(chapter.TERMS) <= set(rows.columns)
    assert {"data", "mode", "K", "seed", "run_id"} <= set(rows.columns)
    assert (rows["info_loss"] > 0).all() and rows["upsilon"].between(0, 1).all()
    assert (rows.loc[rows.data == "latent", "d_f"] == 0).all()
    assert (rows.loc[rows.data == "image", "d_f"] <= 0).all()
    # Evaluations are cached per run: a second pass reads the same numbers back.
    again = chapter.scan_bounds(p, "image")
    pd.testing.assert_frame_equal(image, again)
    assert list(tmp_path.glob("runs/*/eval-bounds-*.json"))
    with pytest.raises(ValueError, match="kind"):
        chapter.scan_bounds(p, "text")


# ---------------------------------------------------------------------------------------------
# Summaries and the υ table


def synthetic_rows(
    acc_slope: float = 2.0,
    noise: float = 0.1,
    seeds: int = 3,
    ks: tuple[int, ...] = (3, 15, 63, 255),
    seed: int = 0,
) -> pd.DataFrame:
    """A scan table with accuracy = 50 + slope log2(K+1) + noise and well-behaved bounds."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for k in ks:
            x = math.log2(k + 1)
            rows.append(
                {
                    "data": "image",
                    "dataset": "toy",
                    "num_classes": 10,
                    "mode": "batch",
                    "K": k,
                    "seed": s,
                    "centroid_accuracy": 50 + acc_slope * x + noise * rng.standard_normal(),
                    "linear_accuracy": 60 + acc_slope * x + noise * rng.standard_normal(),
                    "info_loss": x,
                    "curl_bound": 0.5 * x,
                    "proposed_bound": 0.4 * x,
                    "sup_loss": 1.0,
                    "curl_sup_upper_bound": 2.0**x + 0.01 * rng.standard_normal(),
                    "proposed_sup_upper_bound_exact_upsilon": 3.0 + 0.01 * rng.standard_normal(),
                }
            )
    return pd.DataFrame(rows)


def test_summaries_count_infinite_values() -> None:
    rows = synthetic_rows()
    top = rows["K"] == 255
    rows.loc[top, "curl_sup_upper_bound"] = math.inf
    rows.loc[top & (rows.seed == 0), "proposed_sup_upper_bound_exact_upsilon"] = math.inf
    s = chapter.summarize_over_seeds(
        rows, ["curl_sup_upper_bound", "proposed_sup_upper_bound_exact_upsilon", "sup_loss"]
    ).set_index(["K", "term"])
    assert s.loc[(255, "curl_sup_upper_bound"), "n_inf"] == 3
    assert math.isnan(s.loc[(255, "curl_sup_upper_bound"), "mean"])
    prop = s.loc[(255, "proposed_sup_upper_bound_exact_upsilon")]
    assert prop["n_inf"] == 1 and prop["n_finite"] == 2
    finite = rows.loc[top & (rows.seed > 0), "proposed_sup_upper_bound_exact_upsilon"]
    assert prop["mean"] == pytest.approx(finite.mean())
    assert s.loc[(3, "sup_loss"), "low"] == pytest.approx(1.0)  # no spread, zero-width interval
    wide = chapter.wide_summary(rows, ["curl_sup_upper_bound", "sup_loss"]).set_index("K+1")
    assert wide.loc[256, "curl_sup_upper_bound"] == math.inf
    assert wide.loc[4, "curl_sup_upper_bound"] == pytest.approx(
        rows.loc[rows.K == 3, "curl_sup_upper_bound"].mean()
    )


def test_upsilon_table_exposes_the_float64_error_at_c100() -> None:
    rows = pd.DataFrame(
        {
            "data": ["latent"] * 2 + ["image"],
            "num_classes": [100, 100, 10],
            "K": [127, 1023, 63],
            "upsilon": [0.0, 1.0, 1.0],
            "upsilon_exact": [0.0, 0.99, 0.99],
        }
    )
    t = chapter.upsilon_table(rows).set_index(["C", "K+1"])
    assert t.loc[(100, 128), "exact (uniform)"] < 1e-15
    assert t.loc[(100, 128), "float64 / exact"] > 1e6  # the published computation is far off
    assert t.loc[(10, 64), "float64 / exact"] == pytest.approx(1.0, rel=1e-9)
    assert t.loc[(100, 1024), "exact (uniform)"] == pytest.approx(
        bounds.coverage_probability(1024, num_classes=100)
    )


def test_paper_comparison_lists_quotes_and_ours() -> None:
    rows = synthetic_rows()
    cmp = chapter.paper_comparison(rows)
    paper = cmp[cmp["source"].str.startswith("paper: CIFAR-10,")]
    assert paper["K+1"].tolist() == [32, 64, 128, 256, 512]
    ours = cmp[cmp["source"].str.startswith("ours")]
    assert ours["K+1"].tolist() == [4, 16, 64, 256]
    assert ours["mean-classifier acc. (%)"].iloc[0] == pytest.approx(
        rows.loc[rows.K == 3, "centroid_accuracy"].mean()
    )


# ---------------------------------------------------------------------------------------------
# Verdict rules


def test_seed_slopes_recover_a_known_slope() -> None:
    rows = synthetic_rows(acc_slope=1.5, noise=0.0)
    slopes = chapter.seed_slopes(rows, "centroid_accuracy")
    assert slopes.tolist() == pytest.approx([1.5, 1.5, 1.5])
    mean, low, high, n = chapter.trend(rows, "centroid_accuracy")
    assert (mean, n) == (pytest.approx(1.5), 3)


def _verdict(table: pd.DataFrame, claim: str, setting: str = "") -> str:
    row = table[(table["claim"] == claim) & table["setting"].str.contains(setting, regex=False)]
    assert len(row) == 1, row
    return row["verdict"].iloc[0]


ACC = "more negatives improve accuracy"
CURL = "the CURL bound explodes"
PROP = "the proposed bound stays informative"
LOWER = "both bounds are below L_Info"


@pytest.mark.parametrize(
    ("slope", "noise", "seeds", "expected"),
    [
        (2.0, 0.1, 3, "reproduced"),
        (-2.0, 0.1, 3, "not reproduced"),
        (0.0, 0.01, 3, "not reproduced"),  # flat: a rise below the minimum counts as none
        (0.5, 20.0, 3, "inconclusive"),
        (2.0, 0.1, 1, "inconclusive"),
    ],
)
def test_accuracy_verdicts(slope: float, noise: float, seeds: int, expected: str) -> None:
    table = chapter.verdicts(synthetic_rows(acc_slope=slope, noise=noise, seeds=seeds))
    assert _verdict(table, ACC, "mean classifier") == expected
    assert _verdict(table, ACC, "linear probe") == expected


def test_curl_verdicts() -> None:
    rows = synthetic_rows()
    assert _verdict(chapter.verdicts(rows), CURL) == "reproduced"  # grows
    exploded = rows.copy()
    exploded.loc[exploded.K == 255, "curl_sup_upper_bound"] = math.inf
    table = chapter.verdicts(exploded)
    assert _verdict(table, CURL) == "reproduced"
    assert table.loc[table.claim == CURL, "estimate"].iloc[0] == math.inf
    shrinking = rows.copy()
    shrinking["curl_sup_upper_bound"] = 10.0 - np.log2(shrinking["K"] + 1) + 0.01 * shrinking.seed
    assert _verdict(chapter.verdicts(shrinking), CURL) == "not reproduced"


def test_proposed_verdicts() -> None:
    rows = synthetic_rows()  # CURL 256 at the top, proposed ~3: informative
    assert _verdict(chapter.verdicts(rows), PROP) == "reproduced"
    worse = rows.copy()
    worse["proposed_sup_upper_bound_exact_upsilon"] = 1e4 + worse.seed
    assert _verdict(chapter.verdicts(worse), PROP) == "not reproduced"
    vacuous = rows.copy()
    vacuous.loc[vacuous.K == 255, "proposed_sup_upper_bound_exact_upsilon"] = math.inf
    assert _verdict(chapter.verdicts(vacuous), PROP) == "not reproduced"
    curl_inf = rows.copy()
    curl_inf.loc[curl_inf.K == 255, "curl_sup_upper_bound"] = math.inf
    assert _verdict(chapter.verdicts(curl_inf), PROP) == "reproduced"
    some_inf = rows.copy()
    some_inf.loc[(some_inf.K == 255) & (some_inf.seed == 0), "curl_sup_upper_bound"] = math.inf
    assert _verdict(chapter.verdicts(some_inf), PROP) == "reproduced"  # [finite > 0, inf]
    close = rows.copy()
    top = close.K == 255
    close.loc[top, "proposed_sup_upper_bound_exact_upsilon"] = close.loc[
        top, "curl_sup_upper_bound"
    ] + np.array([-5.0, 5.0, 0.5])
    assert _verdict(chapter.verdicts(close), PROP) == "inconclusive"


def test_lower_bound_sanity_verdicts() -> None:
    rows = synthetic_rows()
    table = chapter.verdicts(rows)
    assert _verdict(table, LOWER, "CURL bound") == "reproduced"
    assert _verdict(table, LOWER, "proposed bound") == "reproduced"
    broken = rows.copy()
    broken.loc[0, "proposed_bound"] = broken.loc[0, "info_loss"] + 1.0
    assert _verdict(chapter.verdicts(broken), LOWER, "proposed bound") == "not reproduced"


def test_verdicts_per_mode_and_data() -> None:
    a = synthetic_rows(acc_slope=2.0)
    b = synthetic_rows(acc_slope=-2.0).assign(mode="mask")
    c = synthetic_rows(acc_slope=0.0, noise=0.01).assign(
        data="latent", dataset="lat", num_classes=100
    )
    table = chapter.verdicts(pd.concat([a, b, c], ignore_index=True))
    assert list(table.columns) == [*chapter.vd.COLUMNS, "key", "data", "mode", "metric"]
    acc = table[(table.claim == ACC) & table.setting.str.contains("mean classifier")]
    got = {s.split(", K+1")[0]: v for s, v in zip(acc["setting"], acc["verdict"], strict=True)}
    assert got == {
        "toy (C=10), batch": "reproduced",
        "toy (C=10), mask": "not reproduced",
        "lat (C=100), batch": "not reproduced",
    }


def test_trend_test_interval_resamples_the_test_images() -> None:
    rng = np.random.default_rng(0)
    rows = synthetic_rows(acc_slope=1.0, noise=0.0)
    m = 2000
    # per-image results whose accuracy rises with K: p = 0.6 + 0.02 log2(K+1)
    packs = [
        probes.pack_correct(torch.from_numpy(rng.random(m) < 0.6 + 0.02 * math.log2(k + 1)))
        for k in rows["K"]
    ]
    rows = rows.assign(linear_correct=packs, num_test=m)
    low, high = chapter.trend_test_interval(rows, "linear_accuracy")
    assert low < 2.0 < high and high - low < 1.5  # 2 points per doubling, within the spread
    assert chapter.trend_test_interval(rows, "centroid_accuracy") is None  # no per-image results
    table = chapter.verdicts(rows)
    row = table[(table.claim == ACC) & table.setting.str.contains("linear probe")].iloc[0]
    assert row["test_set"].startswith("[")


@pytest.mark.parametrize(
    ("rule", "factor"),
    [
        ("linear", lambda b: b / 256),
        ("sqrt", lambda b: math.sqrt(b / 256)),
        ("none", lambda b: 1.0),
    ],
)
def test_the_learning_rate_follows_the_batch_size_by_the_stated_rule(rule, factor) -> None:
    scan = chapter.kscan.Params.from_profile(
        "smoke", num_negatives=[15, 63, 255], lr=2e-3, lr_scaling=rule, seeds=1
    )
    configs = scan.configs()
    for mode, config in configs:
        k = config.negatives_per_query
        batch = k + 1 if mode == "batch" else 256
        assert config.batch_size == batch
        assert config.lr == pytest.approx(2e-3 * factor(batch))
    # the largest K is one run in both modes
    top = [c for _, c in configs if c.negatives_per_query == 255]
    assert len(set(top)) == 1
    with pytest.raises(ValueError, match="lr_scaling"):
        chapter.kscan.Params.from_profile("smoke", lr_scaling="cubic")
