"""Pure TensorFlow/Keras + numpy computations; knows nothing of widgets."""
