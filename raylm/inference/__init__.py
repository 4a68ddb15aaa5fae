"""A trained model put to use: landmarking images and videos (`landmarker`), the exported file and its format
(`exported`), and exporting a checkpoint to one (`export`)."""
