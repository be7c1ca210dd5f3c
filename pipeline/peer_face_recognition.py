"""Times face_recognition (dlib HOG + ResNet) on photos, for `edgepipe faces bench`.

It runs under the interpreter of the managed `face_recognition` environment (`edgepipe env create face_recognition`),
which has dlib and face_recognition but not edgepipe, so it imports nothing of ours. It reads one JSON object on
stdin, {"images": [path, ...], "warmup": int, "runs": int}, and prints one on stdout:
{"versions": {...}, "images": [{"path", "faces", "ms": [run, ...]}, ...]}.

The work timed per photo is face_recognition's documented recipe: `face_locations` (HOG, one upsample) then
`face_encodings` of every face found (5-point alignment, ResNet, one jitter). Decoding the file is not timed.
"""

import importlib.metadata
import json
import sys
import time


def main() -> int:
    import dlib
    import face_recognition

    request = json.load(sys.stdin)
    answer = {"versions": {"face_recognition": importlib.metadata.version("face_recognition"), "dlib": dlib.__version__},
              "images": []}
    for path in request["images"]:
        image = face_recognition.load_image_file(path)
        times, faces = [], 0
        for run in range(request["warmup"] + request["runs"]):
            started = time.perf_counter()
            faces = len(face_recognition.face_encodings(image, face_recognition.face_locations(image)))
            if run >= request["warmup"]:
                times.append((time.perf_counter() - started) * 1e3)
        answer["images"].append({"path": path, "faces": faces, "ms": times})
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
