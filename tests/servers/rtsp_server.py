#!/usr/bin/python3
"""Loopback RTSP server for tests and benchmarks: Debian's GStreamer RTSP server, driven from Python.

Run it with Debian's own /usr/bin/python3 (it needs ``gi`` from python3-gi), not the project's
virtualenv; ``tests/fixtures/rtsp.py`` does that for you.

  rtsp_server.py --size 320x240 --fps 25 --gop 50     live test pattern, endless, H.264, 2 s GOP
  rtsp_server.py --codec h265                         the same in H.265
  rtsp_server.py --file clip.mp4 [--codec h265]       an mp4 file, not re-encoded, paced in real time

Prints one line ``READY rtsp://127.0.0.1:PORT/PATH`` once it listens (``--port 0`` picks a free port),
then serves until killed. Kill it and start it again on the same ``--port`` to simulate a camera
outage; SIGSTOP it to simulate a camera that keeps the connection open but sends nothing.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args: argparse.Namespace) -> str:
    pay = "rtph264pay" if args.codec == "h264" else "rtph265pay"
    if args.file:
        source = f"filesrc location={args.file} ! qtdemux ! {args.codec}parse"
    else:
        width, height = args.size.split("x")
        gop = args.gop or 2 * args.fps
        if args.codec == "h264":
            encoder = (
                f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={args.kbps} "
                f"key-int-max={gop} bframes=0"
            )
        else:
            encoder = (
                f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={args.kbps} key-int-max={gop}"
            )
        source = (
            f"videotestsrc is-live=true pattern={args.pattern} horizontal-speed=4 ! "
            f"video/x-raw,width={width},height={height},framerate={args.fps}/1 ! {encoder}"
        )
    return f"( {source} ! {pay} name=pay0 pt=96 config-interval=-1 )"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", default="0")
    parser.add_argument("--path", default="/test")
    parser.add_argument("--file", help="serve this mp4 (H.264 or H.265 per --codec) instead of a live pattern")
    parser.add_argument("--codec", choices=["h264", "h265"], default="h264")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=0, help="keyframe interval in frames (default 2 s)")
    parser.add_argument("--kbps", type=int, default=500)
    parser.add_argument("--pattern", default="smpte")
    parser.add_argument("--shared", action="store_true", help="all clients share one pipeline")
    args = parser.parse_args()

    Gst.init(None)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(args.shared)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on port {args.port}")
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
