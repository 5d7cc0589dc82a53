"""digitlab.plots: what a figure shows, checked on the drawn figure."""

import numpy as np
import pytest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reliability_diagrams_counts_do_not_overlap_its_legend(seed):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from digitlab.plots import reliability_figure

    rng = np.random.default_rng(seed)
    conf = np.concatenate([rng.uniform(0.1, 1.0, 400), rng.uniform(0.97, 1.0, 4000)])  # most answers sure
    right = rng.random(len(conf)) < conf  # calibrated: right as often as confident
    fig = reliability_figure(np.clip(conf + 0.05, 0, 1), conf, right, 15)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert len(legends) == 1
    legend = legends[0].get_window_extent(renderer)
    labels = [t for t in fig.axes[0].texts if t.get_text().startswith("n=")]
    assert len(labels) >= 10
    overlapping = [t.get_text() for t in labels if t.get_window_extent(renderer).overlaps(legend)]
    assert not overlapping, overlapping
    # Wherever the points fall: the legend stands outside the plot, every count inside the figure.
    assert not legend.overlaps(fig.axes[0].get_window_extent(renderer))
    figure = fig.get_window_extent(renderer)
    for label in labels:
        box = label.get_window_extent(renderer)
        assert figure.x0 <= box.x0 and box.x1 <= figure.x1, label.get_text()
