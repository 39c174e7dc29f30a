"""Train the bundled demo models, deterministically, on CPU.

    python -m cnnviz_widgets.demo.train [--model shapes|digits] [--epochs N] [--out DIR]

writes, for each model NAME, into DIR (default: the package's ``demo/data``):
  NAME.keras          the trained model, without optimizer state
  NAME.npz            held-out images (uint8) and labels, never seen in training
  NAME_history.json   loss / accuracy per epoch, train and validation

``shapes`` trains on procedurally drawn images (see ``shapes.py``): half with one
shape (one-hot target), half with two shapes of different classes (target 0.5 on
each). A second, training-only output applies the class layer at every cell of the
last conv layer and learns from the shapes' masks where each class lies, so that
Grad-CAM points at the right shape; the saved model is the plain classifier.
``digits`` is the S0 tutorial's MNIST network trained on scikit-learn's bundled 8×8
digits, upscaled to MNIST's 28×28 layout (a 20×20 digit centred in the frame);
it needs scikit-learn, the only use of it in the package.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from . import _DATA_DIR as DATA_DIR
from . import MODEL_NAMES, _checked, shapes

DEFAULT_EPOCHS = {"shapes": 12, "digits": 60}
LEARNING_RATES = {"shapes": 2e-3, "digits": 1e-3}

# Generator seeds of the shapes data sets; tests draw their own data with other seeds.
SHAPES_SEEDS = {"train_one": 1, "train_two": 2, "validation": 3, "held_out": 4}
SHAPES_TRAIN_IMAGES = 6000  # of each kind: one shape and two shapes
SHAPES_VALIDATION_IMAGES = 1000
SHAPES_HELD_OUT_IMAGES = 64
DIGITS_HELD_OUT_IMAGES = 200
DIGITS_VALIDATION_IMAGES = 200


def build_shapes_model():
    """Functional CNN: 64×64 RGB → three conv blocks → 16×16 conv map → GAP → softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.Conv2D(64, 3, padding="same", dilation_rate=2, activation="relu", name="conv4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(len(shapes.CLASS_NAMES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def build_digits_model():
    """The S0 tutorial's Sequential MNIST network (56,714 parameters)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )


def _as_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def _quantised(images: np.ndarray) -> np.ndarray:
    """Images rounded to what the shipped uint8 files hold, so training sees the same."""
    return _as_uint8(images).astype(np.float32) / 255


def _location_targets(labels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, 16, 16, classes): the share of each 4×4 block of pixels that the shape of
    each class covers; what the location output learns (one block per conv4 cell)."""
    count, slots = masks.shape[:2]
    blocks = shapes.IMAGE_SIZE // 4
    coverage = masks.reshape(count, slots, blocks, 4, blocks, 4).mean(axis=(3, 5))
    one_hot = np.eye(len(shapes.CLASS_NAMES), dtype=np.float32)[labels.reshape(count, slots)]
    return np.einsum("nshw,nsk->nhwk", coverage, one_hot).astype(np.float32)


def shapes_data(max_train_samples: int | None = None) -> dict:
    """Train (one and two shapes, soft class targets), validation and held-out splits,
    each with class targets under "predictions" and block targets under "location"."""
    per_kind = SHAPES_TRAIN_IMAGES if max_train_samples is None else max_train_samples // 2
    num_classes = len(shapes.CLASS_NAMES)
    one_hot = np.eye(num_classes, dtype=np.float32)
    one, one_labels, one_masks = shapes.generate(per_kind, SHAPES_SEEDS["train_one"])
    two, two_labels, two_masks = shapes.generate(per_kind, SHAPES_SEEDS["train_two"], shapes_per_image=2)
    validation, validation_labels, validation_masks = shapes.generate(SHAPES_VALIDATION_IMAGES, SHAPES_SEEDS["validation"])
    held_out, held_out_labels, _ = shapes.generate(SHAPES_HELD_OUT_IMAGES, SHAPES_SEEDS["held_out"])
    train_targets = {
        "predictions": np.concatenate([one_hot[one_labels], one_hot[two_labels].sum(axis=1) / 2]),
        "location": np.concatenate([_location_targets(one_labels, one_masks), _location_targets(two_labels, two_masks)]),
    }
    validation_targets = {
        "predictions": one_hot[validation_labels],
        "location": _location_targets(validation_labels, validation_masks),
    }
    return {
        "train": (_quantised(np.concatenate([one, two])), train_targets),
        "validation": (_quantised(validation), validation_targets),
        "held_out": (_as_uint8(held_out), held_out_labels),
    }


def digits_data(max_train_samples: int | None = None, seed: int = 0) -> dict:
    """scikit-learn's 1,797 8×8 digits as 28×28 MNIST-like images, split three ways."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = digits.images[..., None].astype(np.float32) / 16
    # MNIST centres a 20×20 digit in a 28×28 frame.
    digit = tf.image.resize(small, (20, 20), method="bicubic", antialias=True).numpy()
    images = _quantised(np.pad(digit, ((0, 0), (4, 4), (4, 4), (0, 0))))
    labels = digits.target.astype(np.int64)
    rest, held_out, rest_labels, held_out_labels = train_test_split(
        images, labels, test_size=DIGITS_HELD_OUT_IMAGES, stratify=labels, random_state=seed
    )
    train, validation, train_labels, validation_labels = train_test_split(
        rest, rest_labels, test_size=DIGITS_VALIDATION_IMAGES, stratify=rest_labels, random_state=seed
    )
    if max_train_samples is not None:
        train, train_labels = train[:max_train_samples], train_labels[:max_train_samples]
    one_hot = np.eye(10, dtype=np.float32)
    return {
        "train": (train, {"predictions": one_hot[train_labels]}),
        "validation": (validation, {"predictions": one_hot[validation_labels]}),
        "held_out": (_as_uint8(held_out), held_out_labels),
    }


def _top_class_present(y_true, y_pred):
    """1 where the top predicted class has a non-zero target: plain accuracy for one-hot
    targets, and "names one of the shapes in the image" for two-shape targets."""
    from keras import ops

    top = ops.argmax(y_pred, axis=-1)
    return ops.cast(ops.take_along_axis(y_true, top[:, None], axis=-1)[:, 0] > 0, "float32")


def _trainer(name: str, model):
    """The model that is fitted: ``model``'s class output under "predictions" and, for
    shapes, a location head on the last conv layer. ``model`` itself is never compiled,
    so it is saved without optimizer state and compile settings."""
    import keras
    from keras import ops

    outputs = {"predictions": model.outputs[0]}
    losses = {"predictions": "categorical_crossentropy"}
    if name == "shapes":
        # The class layer's own weights applied at every conv4 cell, before the softmax,
        # give the class evidence map that Grad-CAM shows for this network; training
        # it to light up only over each class's shape makes Grad-CAM point there.
        classifier = model.get_layer("predictions")
        evidence = ops.matmul(model.get_layer("conv4").output, classifier.kernel) + classifier.bias
        outputs["location"] = ops.sigmoid(evidence)
        losses["location"] = "binary_crossentropy"
        accuracy = keras.metrics.MeanMetricWrapper(_top_class_present, name="accuracy")
    else:
        accuracy = "accuracy"
    trainer = keras.Model(model.inputs, outputs)
    trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATES[name]), loss=losses, metrics={"predictions": [accuracy]})
    return trainer


def train(
    name: str,
    epochs: int | None = None,
    out_dir: str | Path = DATA_DIR,
    *,
    seed: int = 0,
    max_train_samples: int | None = None,
    verbose: int = 2,
) -> dict:
    """Train demo model ``name`` from scratch and write its files into ``out_dir``.

    ``max_train_samples`` trains on a subset (for quick tests). Seeds Python, NumPy and
    TensorFlow and switches on TensorFlow's op determinism for the whole process.
    Returns a dict with ``model_path``, ``history``, ``held_out_accuracy`` and ``seconds``.
    """
    _checked(name)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    if name == "shapes":
        data, model = shapes_data(max_train_samples), build_shapes_model()
        callbacks = []
    else:
        data, model = digits_data(max_train_samples, seed), build_digits_model()
        callbacks = [keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)]
    fit = _trainer(name, model).fit(
        *data["train"],
        validation_data=data["validation"],
        epochs=epochs or DEFAULT_EPOCHS[name],
        batch_size=64,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    held_out_images, held_out_labels = data["held_out"]
    probabilities = model.predict(held_out_images.astype(np.float32) / 255, verbose=0)
    held_out_accuracy = float(np.mean(probabilities.argmax(axis=1) == held_out_labels))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.keras"
    model.save(model_path)
    np.savez_compressed(out_dir / f"{name}.npz", images=held_out_images, labels=held_out_labels)
    history = _class_output_history(fit.history)
    (out_dir / f"{name}_history.json").write_text(json.dumps(history, indent=1) + "\n")
    return {
        "model_path": model_path,
        "history": history,
        "held_out_accuracy": held_out_accuracy,
        "seconds": time.perf_counter() - started,
    }


def _class_output_history(history: dict) -> dict:
    """Keras's per-epoch logs, with the class output's loss as "loss" where Keras
    would put the sum of the losses of several outputs there."""
    if "predictions_loss" in history:
        history = {key: values for key, values in history.items() if key.removeprefix("val_") != "loss"}
    return {key.replace("predictions_", ""): [round(float(value), 6) for value in values] for key, values in history.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES, help="train only this model (default: both)")
    parser.add_argument("--epochs", type=int, help="default: %s" % DEFAULT_EPOCHS)
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in [args.model] if args.model else MODEL_NAMES:
        result = train(name, args.epochs, args.out)
        print(
            f"{name}: held-out accuracy {result['held_out_accuracy']:.4f}, "
            f"{result['seconds']:.0f} s, saved {result['model_path']}"
        )


if __name__ == "__main__":
    main()
