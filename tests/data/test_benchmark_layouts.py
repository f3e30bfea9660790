"""CUB-200-2011, Cars196, SOP and In-Shop loaders on tiny fake archives in the official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.data.benchmarks import cars196_dataset, cub200_dataset, inshop_dataset, sop_dataset
from deepmetric.errors import ConfigError, DataError


def png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


def test_cub_classes_1_to_100_train_101_to_200_test(tmp_path):
    root = tmp_path / "CUB_200_2011"
    root.mkdir()
    # one image for each of classes 1, 2, 100, 101, 150, 200
    classes = [1, 2, 100, 101, 150, 200]
    images, labels, names = [], [], []
    for n, c in enumerate(classes, start=1):
        rel = f"{c:03d}.Bird_{c}/img_{n}.jpg"
        png(root / "images" / rel, c)
        images.append(f"{n} {rel}")
        labels.append(f"{n} {c}")
        names.append(f"{c} {c:03d}.Bird_{c}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(names) + "\n")

    train = cub200_dataset(tmp_path, split="train")  # parent folder works too
    test = cub200_dataset(root, split="test")
    assert train.class_names == ["001.Bird_1", "002.Bird_2", "100.Bird_100"]
    assert test.class_names == ["101.Bird_101", "150.Bird_150", "200.Bird_200"]
    assert train.labels == [0, 1, 2] and len(cub200_dataset(root, split="all")) == 6
    x, y = test[1]
    assert x.shape == (3, 4, 4) and abs(float(x[0, 0, 0]) - 150 / 255) < 1e-6
    with pytest.raises(ConfigError, match="unknown split"):
        cub200_dataset(root, split="val")
    with pytest.raises(DataError, match="images.txt not found"):
        cub200_dataset(tmp_path / "elsewhere")


def test_cars196_devkit_mat_classes_1_to_98_and_99_to_196(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "cars"
    classes = [1, 98, 99, 196, 98]
    dtype = [("relative_im_path", object), ("bbox_x1", object), ("class", object), ("test", object)]
    records = np.zeros((1, len(classes)), dtype=dtype)
    for i, c in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        png(root / rel, i)
        records[0, i] = (rel, np.array([[1]]), np.array([[c]], dtype=np.uint8), np.array([[i % 2]]))
    class_names = np.empty((1, 196), dtype=object)
    for c in range(196):
        class_names[0, c] = f"Make {c + 1}"
    (root / "devkit").mkdir(parents=True)
    savemat(root / "devkit" / "cars_annos.mat", {"annotations": records, "class_names": class_names})

    train = cars196_dataset(root, split="train")
    test = cars196_dataset(root, split="test")
    assert train.class_names == ["Make 1", "Make 98"] and train.labels == [0, 1, 1]
    assert test.class_names == ["Make 99", "Make 196"] and len(test) == 2
    assert Path(test.paths[0]).name == "000003.jpg" and Path(test.paths[0]).is_file()
    test[0]


def test_sop_uses_the_official_train_and_test_lists(tmp_path):
    root = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    (root / "bicycle_final").mkdir(parents=True)
    train_rows = ["1 1 1 bicycle_final/a_0.JPG", "2 1 1 bicycle_final/a_1.JPG", "3 2 1 bicycle_final/b_0.JPG"]
    test_rows = ["4 11319 2 bicycle_final/c_0.JPG", "5 11319 2 bicycle_final/c_1.JPG"]
    for row in train_rows + test_rows:
        png(root / row.split()[3])
    (root / "Ebay_train.txt").write_text(header + "\n".join(train_rows) + "\n")
    (root / "Ebay_test.txt").write_text(header + "\n".join(test_rows) + "\n")
    train, test = sop_dataset(tmp_path, "train"), sop_dataset(root, "test")
    assert train.labels == [0, 0, 1] and train.class_names == ["1", "2"]
    assert test.class_names == ["11319"] and len(test) == 2
    test[1]


def test_inshop_query_and_gallery_partition(tmp_path):
    root = tmp_path / "inshop"
    rows = [
        ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
        ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
        ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
        ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
        ("img/MEN/Denim/id_00000081/01_1_front.jpg", "id_00000081", "gallery"),
    ]
    for path, _, _ in rows:
        png(root / path)
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(" ".join(r) for r in rows) + "\n"
    )
    train = inshop_dataset(root, "train")
    assert len(train) == 2 and train.class_names == ["id_00000002"] and train.is_query is None
    test = inshop_dataset(root, "test")
    assert test.class_names == ["id_00000080", "id_00000081"] and test.labels == [0, 0, 1]
    assert test.is_query == [True, False, False] and test.is_gallery == [False, True, True]
    assert len(inshop_dataset(root, "query")) == 1 and len(inshop_dataset(root, "gallery")) == 2
    test[2]
