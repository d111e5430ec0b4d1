"""Analysis of one PSMA PET/CT examination: volumes, SUV, localisation, preprocessing, models, attention.

Pure functions on files, arrays and geometry: no database, no networking. Runs the same from
`psma-node analyze`, a worker process, or a notebook.
"""
