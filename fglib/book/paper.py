"""The numbers the paper reports (Baydin et al. 2022, Sections 5.3-5.6), to set beside ours.

These are quotations of published results, not measurements; every measurement in the
book comes from a cell that ran. None marks a number the paper does not give.
"""
DEVICE = "NVIDIA Titan XP (paper)"

RESULTS = {
    # experiment: R_f, R_b, R_f/R_b, T_f/T_b
    "logreg": {"R_f": 2.435, "R_b": 4.389, "R_f/R_b": 0.555, "T_f/T_b": 0.553},
    "mlp, lr 2e-05": {"R_f": 2.468, "R_b": 4.165, "R_f/R_b": 0.592, "T_f/T_b": None},  # "close to R_f/R_b"
    "mlp, lr 0.0002": {"R_f": 2.468, "R_b": 4.165, "R_f/R_b": 0.592, "T_f/T_b": 0.211},
    "cnn": {"R_f": 1.434, "R_b": 2.211, "R_f/R_b": 0.649, "T_f/T_b": 0.514},
}
# where the paper gives words instead of a number: (experiment, measure): its words
IN_WORDS = {("mlp, lr 2e-05", "T_f/T_b"): "close to $R_f/R_b$"}   # mathtext, for figures
MEMORY = "under 0.1% difference between the two methods"
DEPTH_BANDS = {"R_b": (4, 5), "R_f": (3, 4), "R_f/R_b up to 10 layers": 0.6, "R_f/R_b at 100 layers": 0.8}


def paper_results(experiment):
    if experiment not in RESULTS:
        raise ValueError(f"the paper reports no {experiment!r}; known: {sorted(RESULTS)}")
    return RESULTS[experiment]
