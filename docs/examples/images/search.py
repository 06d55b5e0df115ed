"""An architecture search on your own images: ``retiarii run search.py`` from this folder.

The data set is ``pngdata.make`` (PNG files decoded with Pillow, random resized crop, flip and
normalise, in a map-style Dataset), read through DataLoader workers; the trials in flight are
trained as one merged model that reads each batch once."""

from retiarii_ir import nn
from retiarii_ir.runtime import Classification, SpaceSpec

from pngdata import make  # beside this file: workers import it by the same name

space = SpaceSpec("retiarii_ir.space.hub.digits:DigitsSpace", inputs=[(4, 1, 16, 16)])
evaluator = Classification(make, data_kwargs={"root": "digits-png"}, batch_size=64, num_workers=2,
                           epochs=2, optimizer="adam", lr=nn.ValueChoice([1e-3, 3e-3], label="lr"))
strategy = "evolution"
strategy_options = {"population_size": 4, "sample_size": 2}
max_trials = 8
concurrency = 4
name = "images"
