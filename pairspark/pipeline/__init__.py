"""The CLI's stages as functions of (SparkSession, paths, settings), one module each; each stage
publishes its output atomically (spark/publish.py). cli.py and the spark-submit jobs call them.

    fit.py       fit            MODEL_DIR from the items and classes tables (ml.py's estimator)
    classify.py  classify       predictions and quarantine through the model, one road for both readers
    inspect.py   evaluate       metrics.json and report.html of predictions
                 audit          likely annotation errors
                 review         the queue of items a person should check
                 diff           what changed between two prediction sets
    run.py       run            fit, classify, (diff,) review, evaluate into one OUT, published together
    embed.py     embed          text columns of the items as vectors
                 embed_classes  a classes table from class names
    readers.py   which reader reads the items (Spark's or pyarrow's), for fit and classify
    stage.py     what every stage shares: its "done" line and progress, tracking, versions, the clock

A stage function shares its module's name: `pipeline.fit` is the function; import a module's
other names from the module itself (`from pairspark.pipeline.classify import PREDICTIONS_INFO`).
"""

from pairspark.pipeline.classify import classify
from pairspark.pipeline.embed import embed, embed_classes
from pairspark.pipeline.fit import fit
from pairspark.pipeline.inspect import audit, diff, evaluate, review
from pairspark.pipeline.run import run

__all__ = ["audit", "classify", "diff", "embed", "embed_classes", "evaluate", "fit", "review", "run"]
