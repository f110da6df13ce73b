"""What the benchmarks share: the server and a database per benchmark (``server``), measurements
(``meters``), the tables compared and their data from :mod:`pgretention.generator` (``tables``), and
results, formatting and plots (``results``)."""
