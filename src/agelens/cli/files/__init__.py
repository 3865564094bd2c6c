"""The files commands read (sources: folders, standard input, URLs) and write beside
their answers (annotated copies, face crops)."""
