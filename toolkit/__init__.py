"""The toolkit's machinery under the top-level scripts: the animation core, the demo, part swap,
multi-face animation, video I/O, face detection and cropping, datasets and augmentation, the
training loop, the logger, the cartoon dataset and the part segmenter's training. It builds on the
model code in modules/ (never the other way round) and never imports a top-level script; see
docs/architecture.md."""
