"""Evaluation: every number and picture that says how good a trained model is.

    classification      the attribute classifier's accuracy, balanced accuracy and AUROC
    dimensions          per latent dim of a VAE: KL, activity, MI with each attribute, a label
    disentanglement/    β-VAE, FactorVAE, MIG, DCI and SAP, exact (synthetic) and on fixed data
    traversal           pictures of the latents: traversal, condition and reconstruction panels
    latents             one model's latents scored and reviewed (table, scores, panels)
    kl_weight           which metrics depend on a VAE's KL weight, and what to rank on instead
"""
