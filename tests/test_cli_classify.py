"""``python -m lab classify``: image files in, classes out; bad images = one line naming the file, exit 2."""

from __future__ import annotations

import numpy as np

from conftest import assert_no_log_noise, run_cli


def test_classify_accepts_jpeg_and_greyscale(lab_main, cli_files, tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((55, 47), 120, np.uint8)).save(grey)
    jpeg = tmp_path / "face.jpg"
    Image.fromarray(np.full((55, 47, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    status, printed, _ = lab_main("classify", "--model", cli_files["model"], grey, jpeg)
    assert status == 0 and [line.split("\t")[0] for line in printed.splitlines()] == [str(grey), str(jpeg)]
    assert all(0 <= int(line.split("\t")[1]) < 5 for line in printed.splitlines())


def _bad_inputs(cli_files, tmp_path) -> dict[str, list]:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((55, 60, 3), np.uint8)).save(wide)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    gif = tmp_path / "face.gif"
    Image.fromarray(np.zeros((55, 47, 3), np.uint8)).save(gif, format="GIF")
    return {
        "60 wide and 55 high": ["classify", "--model", cli_files["model"], wide],
        "a file that is not an image": ["classify", "--model", cli_files["model"], text],
        "a GIF image": ["classify", "--model", cli_files["model"], gif],
        "no such file": ["classify", "--model", cli_files["model"], tmp_path / "missing.png"],
    }


def test_bad_images_are_one_line_errors(lab_main, cli_files, tmp_path):
    for expected, args in _bad_inputs(cli_files, tmp_path).items():
        status, _, err = lab_main(*args)
        assert status == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (args, err)


def test_bad_input_in_a_fresh_process(cli_files, tmp_path):
    result = run_cli("classify", "--model", str(cli_files["model"]), str(cli_files["valid"]))
    assert result.returncode == 2 and result.stdout == ""
    assert_no_log_noise(result.stderr, "classify stderr")
    # One line and nothing else: no TensorFlow start-up lines before the error (TensorFlow was imported).
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {cli_files['valid']}: expected a PNG or JPEG image")
