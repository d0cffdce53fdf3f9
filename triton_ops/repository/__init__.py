"""Model repository layout: version folders, model files, sealed versions."""
