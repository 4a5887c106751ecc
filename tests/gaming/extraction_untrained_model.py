"""Gaming submission (extraction-01): answer with a fresh, untrained model of the same
architecture. Stealing it steals nothing of value, and it is worth nothing to users.
Expected: accuracy gone, score 0.
"""


def protect(model, tools):
    untrained = tools.build(seed=tools.seed + 1)
    return lambda x: tools.probabilities(untrained, x)
