import keras
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.core.class_names import class_names_for, imagenet_class_names, known_class_names
from cnnviz_widgets.core.errors import InputError


def test_imagenet_names_in_keras_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    known = {0: "tench", 1: "goldfish", 101: "tusker", 385: "Indian_elephant", 386: "African_elephant", 999: "toilet_tissue"}
    for index, name in known.items():
        assert names[index] == name
    assert len(set(names)) == 998  # 'crane' (bird, machine) and 'maillot' appear twice in ImageNet


def test_names_for_a_model():
    assert class_names_for(1000)[386] == "African elephant"
    assert class_names_for(3) == ["class 0", "class 1", "class 2"]
    assert class_names_for(2, ["cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(InputError, match="one name per model output"):
        class_names_for(3, ["cat", "dog"])


def test_names_known_offline_are_the_demo_models_and_imagenets_else_none():
    assert known_class_names(cw.demo.load_model(), 5) == ["circle", "square", "triangle", "cross", "star"]
    assert known_class_names(cw.demo.load_model("digits"), 10) == [str(digit) for digit in range(10)]
    inputs = keras.Input((4,))
    unnamed = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    assert known_class_names(unnamed, 5) is None
    imagenet_sized = keras.Model(inputs, keras.layers.Dense(1000)(inputs))
    assert known_class_names(imagenet_sized, 1000)[386] == "African elephant"
    assert known_class_names(cw.demo.load_model(), 7) is None  # names of another output size do not apply
    assert known_class_names(object(), 5) is None  # no model at all: nothing known, no error


def test_every_view_names_a_demo_models_classes_by_default():
    model = cw.demo.load_model()
    images = cw.demo.load_images()[0][:4]
    assert class_names_for(5, model=model) == cw.demo.CLASS_NAMES
    assert class_names_for(5, ["a", "b", "c", "d", "e"], model) == ["a", "b", "c", "d", "e"]  # given names win
    viewer = cw.GradCamViewer(model, images[0])
    card = cw.ChannelCard(model, images, k=2)
    try:
        assert viewer.class_names == card._cards.class_names == cw.demo.CLASS_NAMES
    finally:
        viewer.close()
        card.close()
