"""An RTSP server on loopback for tests/video/test_streams.py: GStreamer's gst-rtsp-server serves an
H.264 .mp4 clip live (at its own rate) at rtsp://127.0.0.1:PORT/live, and the whole server ends
once the clip has been sent, as a camera that goes away does.

Run with the system Python, which has GStreamer's bindings (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0): `/usr/bin/python3 rtsp_server.py CLIP.mp4 PORT`. It prints "ready"
once it listens. Not imported by the tests: cnnlab's venv has no `gi`.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def serve(clip: str, port: int) -> None:
    Gst.init(None)
    loop = GLib.MainLoop()
    factory = GstRtspServer.RTSPMediaFactory()
    # The clip's H.264 as it is (no re-encoding), in RTP packets; SPS/PPS with every keyframe.
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse ! '
                       f'rtph264pay name=pay0 pt=96 config-interval=-1 )')
    factory.connect("media-configure", lambda _, media: _end_after_the_clip(media, loop))
    server = GstRtspServer.RTSPServer(address="127.0.0.1", service=str(port))
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server.py: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    loop.run()


def _end_after_the_clip(media: GstRtspServer.RTSPMedia, loop: GLib.MainLoop) -> None:
    """Quit shortly after the clip's end has left the payloader (its last packets go out first)."""
    def on_event(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.get_event().type == Gst.EventType.EOS:
            GLib.timeout_add(300, loop.quit)
        return Gst.PadProbeReturn.OK

    payloader = media.get_element().get_by_name("pay0")
    payloader.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
