"""Calling a module with other values in place of its parameters.

    call_with(model, {id(p): value}, args)   model(*args) with each listed parameter p replaced by value

torch.func.functional_call takes values by name, and a model can name one parameter twice: a module
used twice (nn.Sequential(shared, nn.Tanh(), shared)) or one weight tied into two modules. Given the
deduplicated names of model.named_parameters(), functional_call's own tie handling restores a module
used twice with the temporary value, leaving its weight a plain tensor that backprop never trains
(torch 2.11 to 2.14). Here every place a parameter sits gets its value once, keyed by the parameter
itself, and the model is left exactly as it was.
"""
from torch.func import functional_call


def parameter_slots(model):
    """[(name, parameter)] for every place a parameter sits: a module used twice is listed once,
    a parameter tied into two modules appears under each module's name."""
    return [(f"{prefix}.{name}" if prefix else name, p)
            for prefix, module in model.named_modules()
            for name, p in module.named_parameters(recurse=False, remove_duplicate=False)]


def call_with(model, values, args):
    """model(*args) with values[id(p)] in place of each parameter p listed there; parameters not
    listed keep their own values. The model's parameters are unchanged afterwards."""
    slots = {name: values[id(p)] for name, p in parameter_slots(model) if id(p) in values}
    return functional_call(model, slots, args, tie_weights=False)
