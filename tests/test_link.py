"""cw.link across threads: GradCamViewer redraws a background map, and may correct its channel, on a job's thread."""

import threading

import cnnviz_widgets as cw
from cnnviz_widgets import GradCamViewer, LayerExplorer
from conftest import small_cnn


def test_a_change_on_another_thread_during_a_follow_is_followed_not_dropped(images):
    model = small_cnn()
    viewer = GradCamViewer(model, images[0])
    explorer = LayerExplorer(model, images, layer=viewer.layer)
    link = cw.link(viewer, explorer)
    other_thread = threading.Thread(target=lambda: setattr(viewer, "channel", 2), name="map job")

    def change_on_another_thread_mid_follow(change):
        if threading.current_thread() is threading.main_thread() and not other_thread.is_alive():
            other_thread.start()
            other_thread.join(0.5)  # it waits for this follow to end; the old flag made it return at once, unfollowed

    explorer.observe(change_on_another_thread_mid_follow, names="channel")
    try:
        viewer.channel = 1
        other_thread.join(10)
        assert (viewer.channel, explorer.channel) == (2, 2)
    finally:
        link.unlink()
        viewer.close()
        explorer.close()
