"""``python -m lab goodnet`` (then ``evaluate`` and ``classify`` on the GoodNet it wrote) on tiny real files."""

from __future__ import annotations

import json

from lab.io import data, images as classify, models


def test_goodnet_evaluate_and_classify(lab_main, cli_files, cli_pruned, tmp_path):
    pruned_model = cli_pruned["report"]["thresholds"][1]["model_path"]
    goodnet_path = tmp_path / "goodnet.keras"
    status, printed, err = lab_main("goodnet", "--badnet", cli_files["model"], "--pruned", pruned_model,
                                    "--out", goodnet_path)
    assert status == 0, err
    assert "class 5 = backdoor" in printed
    status, printed, _ = lab_main("evaluate", "--model", goodnet_path, "--clean", cli_files["valid"],
                                  "--poisoned", cli_files["bd_valid"], "--json")
    result = json.loads(printed)
    assert status == 0 and result["backdoor_class"] == 5
    assert {"detection_rate", "clean_false_positive_rate", "clean_accuracy", "attack_success_rate"} <= set(result)
    status, printed, _ = lab_main("evaluate", "--model", goodnet_path, "--clean", cli_files["valid"])
    assert "clean false positive rate:" in printed and "backdoor class" in printed

    clean = data.load_h5(cli_files["valid"])
    images = []
    for index in range(6):
        images.append(tmp_path / f"face_{index}.png")
        classify.save_image(images[-1], clean.x[index])
    status, printed, _ = lab_main("classify", "--model", goodnet_path, *images)
    expected = models.load_model(goodnet_path).predict_labels(clean.x[:6])
    assert status == 0
    assert printed.splitlines() == [f"{path}\t{label}" for path, label in zip(images, expected)]


def test_a_goodnet_file_must_be_keras(lab_main, cli_files, tmp_path):
    status, _, err = lab_main("goodnet", "--badnet", cli_files["model"], "--pruned", cli_files["model"],
                              "--out", tmp_path / "g.h5")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and "ending in .keras" in err
