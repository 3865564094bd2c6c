"""Ages in video: frames decoded, faces tracked, one steady age per person.

image frames -> faces (detected each frame) -> tracks -> each track's pooled age.
"""

from agelens.video.age_tracker import AgeTracker, TrackedFace, TrackSummary
from agelens.video.frames import Frame, VideoError, read_frames

__all__ = ["AgeTracker", "Frame", "TrackSummary", "TrackedFace", "VideoError", "read_frames"]
