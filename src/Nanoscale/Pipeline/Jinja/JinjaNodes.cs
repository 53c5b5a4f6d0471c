namespace Nanoscale.Pipeline.Jinja;

// The syntax tree of a template. Every node keeps the offset of its first token, for error messages.

internal abstract record Node(int Offset);

internal sealed record TextNode(string Text, int Offset) : Node(Offset);

internal sealed record OutputNode(Expr Value, int Offset) : Node(Offset);

/// <summary>A <c>for</c> loop; <see cref="Recursive"/>: <c>loop(items)</c> renders the body over those items a level deeper.</summary>
internal sealed record ForNode(IReadOnlyList<string> Targets, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node> Else, int Offset,
    bool Recursive = false) : Node(Offset);

internal sealed record IfNode(IReadOnlyList<(Expr Test, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node> Else, int Offset) : Node(Offset);

/// <summary><c>set a = …</c>, <c>set a, b = …</c> or <c>set ns.attr = …</c> (<see cref="Namespace"/> not null).</summary>
internal sealed record SetNode(string? Namespace, IReadOnlyList<string> Targets, Expr Value, int Offset) : Node(Offset);

/// <summary><c>{% set name %}…{% endset %}</c>: the rendered body.</summary>
internal sealed record SetBlockNode(string Target, IReadOnlyList<Node> Body, int Offset) : Node(Offset);

internal sealed record MacroNode(string Name, IReadOnlyList<string> Parameters, IReadOnlyList<Expr?> Defaults, IReadOnlyList<Node> Body, int Offset)
    : Node(Offset);

/// <summary><c>{% call(params) macro(args) %}body{% endcall %}</c>: the call, with <c>caller</c> a macro of
/// <see cref="Parameters"/> that renders <see cref="Body"/>.</summary>
internal sealed record CallBlockNode(IReadOnlyList<string> Parameters, IReadOnlyList<Expr?> Defaults, CallExpr Call, IReadOnlyList<Node> Body, int Offset)
    : Node(Offset);

internal sealed record BreakNode(int Offset) : Node(Offset);

internal sealed record ContinueNode(int Offset) : Node(Offset);

/// <summary>A body rendered as it is: transformers' <c>{% generation %}</c> (which only marks assistant tokens) and
/// <c>{% filter %}</c>-free scoping blocks.</summary>
internal sealed record BlockNode(IReadOnlyList<Node> Body, int Offset) : Node(Offset);

internal abstract record Expr(int Offset);

internal sealed record LiteralExpr(object? Value, int Offset) : Expr(Offset);

internal sealed record NameExpr(string Name, int Offset) : Expr(Offset);

/// <summary>A list literal, or a tuple (<see cref="Tuple"/>: <c>(a, b)</c>, <c>set x = a, b</c>).</summary>
internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Offset, bool Tuple = false) : Expr(Offset);

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Offset) : Expr(Offset);

internal sealed record AttributeExpr(Expr Target, string Name, int Offset) : Expr(Offset);

internal sealed record ItemExpr(Expr Target, Expr Index, int Offset) : Expr(Offset);

internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Offset) : Expr(Offset);

internal sealed record CallExpr(Expr Callee, IReadOnlyList<Expr> Arguments, IReadOnlyList<(string Name, Expr Value)> Named, int Offset) : Expr(Offset);

internal sealed record FilterExpr(Expr Target, string Name, IReadOnlyList<Expr> Arguments, IReadOnlyList<(string Name, Expr Value)> Named, int Offset)
    : Expr(Offset);

internal sealed record TestExpr(Expr Target, string Name, IReadOnlyList<Expr> Arguments, bool Negated, int Offset) : Expr(Offset);

/// <summary><c>-x</c>, <c>+x</c> or <c>not x</c>.</summary>
internal sealed record UnaryExpr(string Operator, Expr Operand, int Offset) : Expr(Offset);

/// <summary>Arithmetic (<c>+ - * / // % **</c>), <c>~</c>, <c>and</c>, <c>or</c>.</summary>
internal sealed record BinaryExpr(string Operator, Expr Left, Expr Right, int Offset) : Expr(Offset);

/// <summary><c>a == b</c>, <c>a in b</c>, … chained as Python chains them (<c>a &lt; b &lt; c</c>).</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Operator, Expr Operand)> Rest, int Offset) : Expr(Offset);

internal sealed record ConditionalExpr(Expr Test, Expr Then, Expr? Else, int Offset) : Expr(Offset);
