import time, numpy as np, keras
from exp import load_mnist, split, build
xtr, ytr, xte, yte = load_mnist()
xf, xv, yf, yv = split(xtr, ytr)
prep = lambda x: (x.astype("float32") / 255.0)[..., None]
xf, xv = prep(xf), prep(xv)
keras.utils.set_random_seed(0)
m = build("c16k3,p,c32k3,p,c64k3,gap")
m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
t=time.perf_counter(); h = m.fit(xf, yf, batch_size=256, epochs=1, verbose=0); print("fit", time.perf_counter()-t, h.history)
print(m.evaluate(xv, yv, verbose=0))
pr = m(xv[:2000], training=True); print("train-mode acc", (np.argmax(pr,1)==yv[:2000]).mean())
