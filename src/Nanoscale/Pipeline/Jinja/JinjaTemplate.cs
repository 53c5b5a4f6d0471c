using System.Text;
using static Nanoscale.Pipeline.Jinja.JinjaValues;

namespace Nanoscale.Pipeline.Jinja;

/// <summary>
/// A parsed Jinja template (<see cref="JinjaParser"/> says which subset) and its renderer: a tree walk over
/// <see cref="JinjaValues"/>, with <see cref="JinjaBuiltins"/>. A template comes from a model's files, so rendering is
/// bounded: at most <see cref="MaxOutput"/> characters out, <see cref="MaxSteps"/> statements and loop turns, and
/// macros (and recursive loops) nested <see cref="MaxCalls"/> deep; past any of them it stops with a <see cref="JinjaException"/>.
/// </summary>
/// <remarks>Written here rather than taken from a package: no maintained Jinja engine for .NET is on NuGet (the
/// ones named so are unlisted or alpha), and chat templates need only this subset. Checked against Python's Jinja2
/// configured as transformers configures it (<c>tools/chat_template_reference.py</c>, <c>JinjaTemplateTests</c>).</remarks>
internal sealed class JinjaTemplate
{
    public const int MaxOutput = 1 << 24;
    public const long MaxSteps = 2_000_000;
    public const int MaxCalls = 64;

    private readonly string _source;
    private readonly IReadOnlyList<Node> _body;

    private JinjaTemplate(string source, IReadOnlyList<Node> body) => (_source, _body) = (source, body);

    /// <exception cref="JinjaException">The template is not in the subset, or not well formed.</exception>
    public static JinjaTemplate Parse(string template)
    {
        var (source, body) = JinjaParser.Parse(template);
        return new JinjaTemplate(source, body);
    }

    /// <summary>The text for <paramref name="variables"/>; <paramref name="now"/> is <c>strftime_now</c>'s clock (local time by default).</summary>
    /// <exception cref="JinjaException">The template failed on these values, or raised (<see cref="JinjaException.Raised"/>).</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, Func<DateTime>? now = null) =>
        new Renderer(_source, JinjaBuiltins.Globals(now ?? (() => DateTime.Now)), variables).Run(_body);

    private enum Flow { Next, Break, Continue }

    private sealed class Renderer(string source, IReadOnlyDictionary<string, object?> globals, IReadOnlyDictionary<string, object?> variables)
    {
        private StringBuilder _out = new();
        private List<Dictionary<string, object?>> _scopes = [new(variables)];
        private long _steps;
        private int _calls;

        public string Run(IReadOnlyList<Node> body)
        {
            Execute(body);
            return _out.ToString();
        }

        private JinjaException Located(JinjaException e, int offset)
        {
            if (e.Line > 0) return e;
            var (line, column) = JinjaLexer.Locate(source, offset);
            return new JinjaException(e.Reason, line, column, e.Raised);
        }

        private void Step(int offset)
        {
            if (++_steps > MaxSteps) throw Located(new JinjaException($"the template ran more than {MaxSteps} steps", 0, 0), offset);
        }

        private void Write(string text, int offset)
        {
            if (_out.Length + (long)text.Length > MaxOutput)
                throw Located(new JinjaException($"the template wrote more than {MaxOutput} characters", 0, 0), offset);
            _out.Append(text);
        }

        private Flow Execute(IReadOnlyList<Node> nodes)
        {
            foreach (var node in nodes)
            {
                Step(node.Offset);
                try
                {
                    var flow = Execute(node);
                    if (flow != Flow.Next) return flow;
                }
                catch (JinjaException e) when (e.Line == 0) { throw Located(e, node.Offset); }
            }
            return Flow.Next;
        }

        private Flow Execute(Node node)
        {
            switch (node)
            {
                case TextNode text: Write(text.Text, text.Offset); return Flow.Next;
                case OutputNode output: Write(Str(Evaluate(output.Value)), output.Offset); return Flow.Next;
                case IfNode branch:
                    foreach (var (test, body) in branch.Branches)
                        if (IsTrue(Evaluate(test))) return Execute(body);
                    return Execute(branch.Else);
                case ForNode loop: return For(loop);
                case SetNode set:
                    var value = Evaluate(set.Value);
                    if (set.Namespace is { } name)
                    {
                        if (Lookup(name) is not Namespace ns) throw new JinjaException($"'{name}' is not a namespace: only namespace(...) attributes can be set", 0, 0);
                        ns.Values[set.Targets[0]] = value;
                    }
                    else Assign(set.Targets, value);
                    return Flow.Next;
                case SetBlockNode block:
                    _scopes[^1][block.Target] = Capture(block.Body);
                    return Flow.Next;
                case MacroNode macro:
                    _scopes[^1][macro.Name] = Macro(macro);
                    return Flow.Next;
                case CallBlockNode block:
                {
                    // The macro called with `caller`: the block's body as a macro of the block's parameters.
                    var callee = Evaluate(block.Call.Callee);
                    if (callee is not JinjaCallable function)
                        throw new JinjaException(callee is Undefined u ? $"{u.Description}: it cannot be called" : $"a {TypeName(callee)} cannot be called", 0, 0);
                    var named = Named(block.Call.Named);
                    named["caller"] = Macro(new MacroNode("caller", block.Parameters, block.Defaults, block.Body, block.Offset));
                    _out.Append(Str(function.Invoke(Values(block.Call.Arguments), named)));
                    return Flow.Next;
                }
                case BlockNode block: return Execute(block.Body);
                case BreakNode: return Flow.Break;
                case ContinueNode: return Flow.Continue;
                default: throw new JinjaException($"unknown node {node.GetType().Name}", 0, 0);
            }
        }

        private void Assign(IReadOnlyList<string> targets, object? value)
        {
            if (targets.Count == 1)
            {
                _scopes[^1][targets[0]] = value;
                return;
            }
            var items = value is List<object?> or string ? Iterate(value) : throw new JinjaException($"a {TypeName(value)} cannot be unpacked into {targets.Count} names", 0, 0);
            if (items.Count != targets.Count) throw new JinjaException($"{items.Count} values cannot be unpacked into {targets.Count} names", 0, 0);
            for (int k = 0; k < targets.Count; k++) _scopes[^1][targets[k]] = items[k];
        }

        private Flow For(ForNode loop) => For(loop, Iterate(Evaluate(loop.Iterable)), 1);

        /// <summary>The loop over <paramref name="all"/> at <paramref name="depth"/> (a recursive loop's <c>loop(items)</c>
        /// runs it a level deeper and gives what it wrote).</summary>
        private Flow For(ForNode loop, List<object?> all, int depth)
        {
            _scopes.Add([]);
            try
            {
                var items = all;
                if (loop.Filter is not null)
                {
                    items = [];
                    foreach (var item in all)
                    {
                        Step(loop.Offset);
                        Assign(loop.Targets, item);
                        if (IsTrue(Evaluate(loop.Filter))) items.Add(item);
                    }
                }
                for (int k = 0; k < items.Count; k++)
                {
                    Step(loop.Offset);
                    // Each turn starts a fresh scope, as Jinja's: what one turn sets, the next does not see.
                    _scopes[^1] = [];
                    Assign(loop.Targets, items[k]);
                    var info = LoopInfo(items, k, depth);
                    if (loop.Recursive)
                        info[RecurseKey] = new JinjaCallable("loop", (a, _) =>
                        {
                            if (a.Count != 1) throw new JinjaException("loop(...) takes the items of the next level", 0, 0);
                            if (++_calls > MaxCalls) throw new JinjaException($"a recursive loop goes more than {MaxCalls} deep", 0, 0);
                            var outer = _out;
                            _out = new StringBuilder();
                            try
                            {
                                For(loop, Iterate(a[0]), depth + 1);
                                return _out.ToString();
                            }
                            finally
                            {
                                _out = outer;
                                _calls--;
                            }
                        });
                    _scopes[^1]["loop"] = info;
                    if (Execute(loop.Body) == Flow.Break) break;
                }
                if (items.Count == 0) Execute(loop.Else);
            }
            finally { _scopes.RemoveAt(_scopes.Count - 1); }
            return Flow.Next;
        }

        /// <summary>The key under which a recursive loop's <c>loop</c> holds what <c>loop(items)</c> calls (no template
        /// can name it).</summary>
        private const string RecurseKey = "\0loop";

        private static OrderedDictionary<string, object?> LoopInfo(List<object?> items, int k, int depth) => new(StringComparer.Ordinal)
        {
            ["index"] = (long)k + 1,
            ["index0"] = (long)k,
            ["revindex"] = (long)(items.Count - k),
            ["revindex0"] = (long)(items.Count - k - 1),
            ["first"] = k == 0,
            ["last"] = k == items.Count - 1,
            ["length"] = (long)items.Count,
            ["depth"] = (long)depth,
            ["depth0"] = (long)depth - 1,
            ["previtem"] = k > 0 ? items[k - 1] : new Undefined("there is no previous item"),
            ["nextitem"] = k + 1 < items.Count ? items[k + 1] : new Undefined("there is no next item"),
            ["cycle"] = new JinjaCallable("loop.cycle", (a, _) =>
                a.Count > 0 ? a[k % a.Count] : throw new JinjaException("loop.cycle needs at least one value", 0, 0)),
        };

        private string Capture(IReadOnlyList<Node> body)
        {
            var outer = _out;
            _out = new StringBuilder();
            try
            {
                Execute(body);
                return _out.ToString();
            }
            finally { _out = outer; }
        }

        private JinjaCallable Macro(MacroNode macro)
        {
            // The scopes around the definition (a loop's variables, the template's, live), as Jinja's closures see them.
            var around = _scopes.ToList();
            return new JinjaCallable(macro.Name, (arguments, named) =>
            {
                if (++_calls > MaxCalls) throw new JinjaException($"macros call each other more than {MaxCalls} deep", 0, 0);
                var outerScopes = _scopes;
                try
                {
                    // A call block's body, as `caller` (Jinja2 gives it to the macro called).
                    var frame = new Dictionary<string, object?>();
                    if (named.TryGetValue("caller", out var caller) && !macro.Parameters.Contains("caller")) frame["caller"] = caller;
                    for (int k = 0; k < macro.Parameters.Count; k++)
                    {
                        var p = macro.Parameters[k];
                        frame[p] = k < arguments.Count ? arguments[k]
                            : named.TryGetValue(p, out var v) ? v
                            : macro.Defaults[k] is { } d ? Evaluate(d)
                            : new Undefined($"'{p}' is undefined");
                    }
                    _scopes = [.. around, frame];
                    return Capture(macro.Body);
                }
                finally
                {
                    _scopes = outerScopes;
                    _calls--;
                }
            });
        }

        private object? Lookup(string name)
        {
            for (int k = _scopes.Count - 1; k >= 0; k--)
                if (_scopes[k].TryGetValue(name, out var value)) return value;
            return globals.TryGetValue(name, out var global) ? global : new Undefined($"'{name}' is undefined");
        }

        private object? Evaluate(Expr expression)
        {
            try { return Value(expression); }
            catch (JinjaException e) when (e.Line == 0) { throw Located(e, expression.Offset); }
        }

        private List<object?> Values(IReadOnlyList<Expr> expressions) => expressions.Select(Evaluate).ToList();

        private Dictionary<string, object?> Named(IReadOnlyList<(string Name, Expr Value)> named) => named.ToDictionary(p => p.Name, p => Evaluate(p.Value));

        private object? Value(Expr expression)
        {
            switch (expression)
            {
                case LiteralExpr literal: return literal.Value;
                case NameExpr name: return Lookup(name.Name);
                case ListExpr list: return list.Tuple ? new JinjaTuple(Values(list.Items)) : Values(list.Items);
                case DictExpr dict:
                    var result = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (key, value) in dict.Items)
                        result[Evaluate(key) as string ?? throw new JinjaException("dict keys must be strings here", 0, 0)] = Evaluate(value);
                    return result;
                case AttributeExpr attribute: return JinjaBuiltins.Attribute(Evaluate(attribute.Target), attribute.Name);
                case ItemExpr item: return JinjaBuiltins.Item(Evaluate(item.Target), Evaluate(item.Index));
                case SliceExpr slice:
                    return JinjaBuiltins.Slice(Evaluate(slice.Target), slice.Start is null ? null : Evaluate(slice.Start),
                        slice.Stop is null ? null : Evaluate(slice.Stop), slice.Step is null ? null : Evaluate(slice.Step));
                case CallExpr call:
                    var callee = Evaluate(call.Callee);
                    if (callee is OrderedDictionary<string, object?> loopInfo && loopInfo.TryGetValue(RecurseKey, out var recurse)) callee = recurse;
                    if (callee is not JinjaCallable function)
                        throw new JinjaException(callee is Undefined u ? $"{u.Description}: it cannot be called" : $"a {TypeName(callee)} cannot be called", 0, 0);
                    return function.Invoke(Values(call.Arguments), Named(call.Named));
                case FilterExpr filter: return JinjaBuiltins.Filter(filter.Name, Evaluate(filter.Target), Values(filter.Arguments), Named(filter.Named));
                case TestExpr test: return JinjaBuiltins.Test(test.Name, Evaluate(test.Target), Values(test.Arguments)) != test.Negated;
                case UnaryExpr unary:
                    var operand = Evaluate(unary.Operand);
                    return unary.Operator switch
                    {
                        "not" => !IsTrue(operand),
                        "-" => operand is double d ? -d : (object)checked(-ToLong(operand)),
                        _ => operand is double ? operand : ToLong(operand),
                    };
                case BinaryExpr binary:
                    switch (binary.Operator)
                    {
                        case "and":
                            var left = Evaluate(binary.Left);
                            return IsTrue(left) ? Evaluate(binary.Right) : left;
                        case "or":
                            var first = Evaluate(binary.Left);
                            return IsTrue(first) ? first : Evaluate(binary.Right);
                        case "~":
                            var joined = Str(Evaluate(binary.Left)) + Str(Evaluate(binary.Right));
                            return joined.Length <= MaxOutput ? joined : throw new JinjaException($"a string longer than {MaxOutput} characters", 0, 0);
                        default:
                            return JinjaBuiltins.Arithmetic(binary.Operator, Evaluate(binary.Left), Evaluate(binary.Right));
                    }
                case CompareExpr compare:
                    var a = Evaluate(compare.First);
                    foreach (var (op, next) in compare.Rest)
                    {
                        var b = Evaluate(next);
                        bool holds = op switch
                        {
                            "==" => Equal(a, b),
                            "!=" => !Equal(a, b),
                            "<" => Order(a, b) < 0,
                            ">" => Order(a, b) > 0,
                            "<=" => Order(a, b) <= 0,
                            ">=" => Order(a, b) >= 0,
                            "in" => JinjaBuiltins.Contains(b, a),
                            _ => !JinjaBuiltins.Contains(b, a),
                        };
                        if (!holds) return false;
                        a = b;
                    }
                    return true;
                case ConditionalExpr conditional:
                    return IsTrue(Evaluate(conditional.Test)) ? Evaluate(conditional.Then)
                        : conditional.Else is null ? new Undefined("the conditional expression has no else") : Evaluate(conditional.Else);
                default: throw new JinjaException($"unknown expression {expression.GetType().Name}", 0, 0);
            }
        }
    }
}
