"""Deals: judge a multi-year compute deal with an optimised supplier portfolio and its risk
(`megawatt plan`). `spec` reads plan files."""
