"""Spark glue: the only package that imports pyspark."""
