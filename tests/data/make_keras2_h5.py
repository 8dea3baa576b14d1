"""Makes keras2_cnn.h5 and keras2_cnn_expected.npz: a small CNN saved by Keras 2 (the tf_keras
package, legacy HDF5 format) and its outputs computed by Keras 2 itself, for
tests/test_lowering.py. Run once by hand with tf_keras on the path (it is not a dependency of
this project; the files it wrote are committed):

    PYTHONPATH=/path/to/tf_keras/site python tests/data/make_keras2_h5.py
"""
from pathlib import Path

import numpy as np
import tf_keras as keras

HERE = Path(__file__).resolve().parent
keras.utils.set_random_seed(11)
model = keras.Sequential([
    keras.layers.InputLayer(input_shape=(8, 8, 1), name="pixels"),
    keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
    keras.layers.BatchNormalization(name="bn1"),           # after the ReLU: folded forward
    keras.layers.MaxPooling2D(2, name="p1"),
    keras.layers.Conv2D(6, 3, padding="valid", name="c2"),
    keras.layers.BatchNormalization(name="bn2"),           # before the ReLU: fused
    keras.layers.ReLU(name="r2"),
    keras.layers.Flatten(name="f"),
    keras.layers.Dropout(0.3, name="d"),
    keras.layers.Dense(3, name="out"),
], name="keras2_cnn")
rng = np.random.default_rng(11)
for name in ("bn1", "bn2"):
    layer = model.get_layer(name)
    c = layer.gamma.shape[0]
    layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c),
                       rng.normal(0.2, 0.2, c), rng.uniform(0.5, 2.0, c)])
model.save(HERE / "keras2_cnn.h5")
x = rng.random((5, 8, 8, 1)).astype(np.float32)
np.savez(HERE / "keras2_cnn_expected.npz", x=x, y=model(x, training=False).numpy(),
         keras_version=np.array(keras.__version__))
print("keras", keras.__version__)
