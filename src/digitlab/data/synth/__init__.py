"""Synthetic data, made from a split's MNIST digits or drawn from nothing: what tests, calibration,
benchmarks and the line model train on where no real photos exist.

- `render`: the one renderer of ink on paper (a cover of ink 0-1 to grey or colour pixels, under even or
  uneven light, through JPEG) that every generator here draws with;
- `wild`: the wild validation set, validation digits drawn as people's images, one change per column;
- `lines`: handwritten number lines for the line model, generated afresh each epoch;
- `numbers`: the benchmark's numbers, digits of one split set side by side in subsets;
- `marks`: marks that are not digits (taps, dots, ticks, filled pages, blank paper).

Each generator has its own parameters; none reads another's.
"""
