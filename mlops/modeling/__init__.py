"""Model code shared by the Transform and Trainer steps and by serving: the TFT preprocessing_fn
builder (preprocessing.py), the Keras model builder (model.py) and the TensorFlow-free NumPy
preprocessor in front of the TFLite model (tflite_predictor.py)."""
